"""Stable unCLIP's first stage (families/unclip.py): the CLIP image embedding each image is drawn from,
made before the one loop and given to it as the UNet's class label beside the text.

The embedding comes from the picture of `variations=` (the model's vision encoder), else from the
model's prior sampling it from the prompt (`prior_steps`, `prior_guidance`), else zeros; it is then
noised to `noise_level`. Random numbers come from image k's own generator (seed + k) in
StableUnCLIPPipeline's order: the prior's latents and steps, the embedding's noise, then (in the loop)
the image's latents, so a one-image call matches diffusers' pipelines on the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import latentdiff.config.params as params
from latentdiff.errors import ModelError, UsageError
from latentdiff.families.unclip import (
    PRIOR_GUIDANCE,
    PRIOR_STEPS,
    check_image_encoder,
    check_noise_level,
    embedding_width,
    image_embeddings,
    noised_embeddings,
    prior_embeddings,
    with_labels,
)
from latentdiff.models.assemble import load_prior
from latentdiff.models.unclip_parts import PRIOR_MIN_STEPS, check_prior_folder
from latentdiff.sampling.model_call import context_at
from latentdiff.workflows.image_encoder import prompt_images

NAMES = ("variations", "noise_level", "prior", "prior_steps", "prior_guidance")


@dataclass(frozen=True)
class UnclipRequest:
    """Where a call's image embeddings come from ("variations", "prior" or "zeros") and their settings."""

    embedding: str
    noise_level: int = 0
    picture: Any = None  # the variations picture (PIL RGB)
    path: str | None = None  # its file, where it came from one
    prior_steps: int | None = None
    prior_guidance: float | None = None
    prior_path: str | None = None  # a Kandinsky 2.2 (or Karlo) prior folder given instead of the model's own prior
    prior_parts: dict | None = None  # its loaded parts (Components.unclip's names)

    def record(self) -> dict:
        """What an image records (PNG metadata, `--from`)."""
        out = {"image_embedding": self.embedding, "noise_level": self.noise_level}
        if self.path is not None:
            out["variations"] = self.path
        if self.embedding == "prior":
            out.update(prior_steps=self.prior_steps, prior_guidance=self.prior_guidance)
        if self.prior_path is not None:
            out["prior"] = self.prior_path
        return out


def unclip_request(pipe, taken: dict, request, a1111: bool = False) -> UnclipRequest | None:
    """The checked unCLIP settings of a call (None for other models, which refuse them in one line)."""
    given = {k: taken.get(k) for k in NAMES if taken.get(k) is not None}
    if pipe.family.name != "unclip":
        if given:
            raise UsageError(
                f"{', '.join(given)} need a Stable unCLIP model (an image-embedding decoder); this model is "
                f"{pipe.family.label}"
            )
        return None
    _check_workflow(request, taken, a1111)
    c, api = pipe.components, params.api_label
    level = check_noise_level(c, given.get("noise_level", 0))
    if "variations" in given:
        if given.keys() & {"prior", "prior_steps", "prior_guidance"}:
            raise UsageError("prior, prior_steps and prior_guidance are for text through a prior, not for variations")
        image = given["variations"]
        picture = prompt_images(image, "variations")[0] if not isinstance(image, (list, tuple)) else None
        if picture is None:
            raise UsageError("variations takes one picture (a path or a PIL image)")
        check_image_encoder(c)
        path = str(image) if not hasattr(image, "size") else None
        return UnclipRequest("variations", level, picture, path)
    own = given.get("prior") is None
    if own and c.unclip.get("prior") is None:
        if "prior_steps" in given or "prior_guidance" in given:
            raise UsageError("prior_steps and prior_guidance need a model with a prior (prior/ in its folder)")
        return UnclipRequest("zeros", level)
    path = None if own else params.path_text(api, "prior", given["prior"])
    parts = c.unclip if own else kandinsky_prior(pipe, path)
    steps, guidance = prior_settings(parts, given)
    return UnclipRequest("prior", level, None, None, steps, guidance, path, None if own else parts)


def prior_settings(parts: dict, given: dict) -> tuple[int, float]:
    """(prior_steps, prior_guidance) checked: from 2 (UnCLIPScheduler's fewest) to the prior scheduler's timesteps."""
    api, most = params.api_label, min(params.MAX_STEPS, parts["prior_scheduler"].get("num_train_timesteps", 1000))
    steps = params.whole(api, "prior_steps", given.get("prior_steps", PRIOR_STEPS), PRIOR_MIN_STEPS, most)
    guidance = params.real(api, "prior_guidance", given.get("prior_guidance", PRIOR_GUIDANCE), 0.0, params.MAX_GUIDANCE)
    return steps, guidance


def kandinsky_prior(pipe, path: str) -> dict:
    """The Kandinsky 2.2 (or Karlo UnCLIPPipeline) prior folder `path` loaded (once per pipeline) on the pipeline's device, its
    embedding as wide as the decoder's class label takes."""
    folder = Path(path)
    check_prior_folder(folder, "prior")
    cache = pipe.__dict__.setdefault("_priors", {})
    key = folder.resolve()
    if key not in cache:
        try:
            parts = load_prior(folder, pipe.allow_pickle, "cpu")
        except ModelError as e:
            raise ModelError(f"prior {path}: {e}") from None
        cache[key] = parts
    for name in ("prior", "prior_text_encoder"):  # where the pipeline is now (pipe.to may have moved it)
        cache[key][name].to(device=pipe.device, dtype=pipe.dtype)
    width, want = cache[key]["prior"].config.embedding_dim, embedding_width(pipe.components)
    if width != want:
        raise UsageError(f"prior {path} makes {width}-wide image embeddings; this decoder takes {want}-wide ones")
    return cache[key]


def _check_workflow(request, taken: dict, a1111: bool) -> None:
    """Refuse what does not carry the image embedding yet: A1111's and ComfyUI's noise."""
    if str(taken.get("noise")).startswith("comfy") or a1111:
        raise UsageError("a Stable unCLIP model draws its noise per image (noise 'per_image', no A1111 noise options)")


def image_stage(pipe, texts: list[str], seeds: list[int], request, cond, uncond):
    """(cond, uncond, the images' generators) with each row's class label: the noised image embedding
    for the conditional rows, zeros for the unconditional ones; unchanged (generators None) for models
    without an image embedding."""
    u = getattr(request, "unclip", None)
    if u is None:
        return cond, uncond, None
    c = pipe.components
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    if u.embedding == "variations":
        embeds = image_embeddings(c, [u.picture]).repeat(len(seeds), 1)
    elif u.embedding == "prior":
        parts = u.prior_parts or c.unclip
        embeds = prior_embeddings(parts, texts, u.prior_steps, u.prior_guidance, gens, u.prior_parts is not None)
    else:
        embeds = torch.zeros(len(seeds), embedding_width(c), device=pipe.device, dtype=pipe.dtype)
    labels = noised_embeddings(c, embeds, u.noise_level, gens)
    uncond = None if uncond is None else with_labels(uncond, torch.zeros_like(labels))
    return with_labels(cond, labels), uncond, gens


def same_labels(first, context):
    """`context` (the hires pass's) with the class labels of `first` (the first pass's context with the
    same rows), so both passes draw from one image embedding; unchanged where `first` has none."""
    if context is None or first is None:
        return context
    labels = getattr(context_at(first, 0), "added", {}).get("class_labels")
    return context if labels is None else with_labels(context, labels)
