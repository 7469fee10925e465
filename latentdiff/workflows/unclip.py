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
from typing import Any

import torch

import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.families.unclip import (
    PRIOR_GUIDANCE,
    PRIOR_STEPS,
    check_noise_level,
    embedding_width,
    image_embeddings,
    noised_embeddings,
    prior_embeddings,
    with_labels,
)
from latentdiff.workflows.image_encoder import prompt_images

NAMES = ("variations", "noise_level", "prior_steps", "prior_guidance")


@dataclass(frozen=True)
class UnclipRequest:
    """Where a call's image embeddings come from ("variations", "prior" or "zeros") and their settings."""

    embedding: str
    noise_level: int = 0
    picture: Any = None  # the variations picture (PIL RGB)
    path: str | None = None  # its file, where it came from one
    prior_steps: int | None = None
    prior_guidance: float | None = None

    def record(self) -> dict:
        """What an image records (PNG metadata, `--from`)."""
        out = {"image_embedding": self.embedding, "noise_level": self.noise_level}
        if self.path is not None:
            out["variations"] = self.path
        if self.embedding == "prior":
            out.update(prior_steps=self.prior_steps, prior_guidance=self.prior_guidance)
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
        if "prior_steps" in given or "prior_guidance" in given:
            raise UsageError("prior_steps and prior_guidance are for text through the prior, not for variations")
        image = given["variations"]
        picture = prompt_images(image, "variations")[0] if not isinstance(image, (list, tuple)) else None
        if picture is None:
            raise UsageError("variations takes one picture (a path or a PIL image)")
        _check_encoder(c)
        path = str(image) if not hasattr(image, "size") else None
        return UnclipRequest("variations", level, picture, path)
    if c.unclip.get("prior") is None:
        if "prior_steps" in given or "prior_guidance" in given:
            raise UsageError("prior_steps and prior_guidance need a model with a prior (prior/ in its folder)")
        return UnclipRequest("zeros", level)
    steps = params.whole(api, "prior_steps", given.get("prior_steps", PRIOR_STEPS), 1, params.MAX_STEPS)
    guidance = params.real(api, "prior_guidance", given.get("prior_guidance", PRIOR_GUIDANCE), 0.0, params.MAX_GUIDANCE)
    return UnclipRequest("prior", level, prior_steps=steps, prior_guidance=guidance)


def _check_encoder(c) -> None:
    if c.unclip.get("image_encoder") is None or c.unclip.get("feature_extractor") is None:
        raise UsageError(
            "variations need the model's CLIP image encoder (image_encoder/ and feature_extractor/, the "
            "StableUnCLIPImg2ImgPipeline layout); this unCLIP model has none"
        )


def _check_workflow(request, taken: dict, a1111: bool) -> None:
    """Refuse what does not carry the image embedding yet: the hires pass, A1111's and ComfyUI's noise."""
    if request.options is not None and request.options.hires:
        raise UsageError("a Stable unCLIP model takes no hires pass yet")
    if taken.get("noise") == "comfy" or a1111:
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
        embeds = prior_embeddings(c, texts, u.prior_steps, u.prior_guidance, gens)
    else:
        embeds = torch.zeros(len(seeds), embedding_width(c), device=pipe.device, dtype=pipe.dtype)
    labels = noised_embeddings(c, embeds, u.noise_level, gens)
    uncond = None if uncond is None else with_labels(uncond, torch.zeros_like(labels))
    return with_labels(cond, labels), uncond, gens
