"""Stable unCLIP (Stability AI 2023, the SD 2.1 unCLIP models; DALL-E 2's design, Ramesh et al. 2022,
on a latent UNet): an SD 2 UNet that cross-attends to the text and also takes a CLIP image embedding as
its class label (`class_embed_type="projection"`). The embedding is normalised, noised to a noise level
by the image-noising scheduler, un-normalised and followed by a sinusoidal embedding of the level
(diffusers' StableUnCLIPPipeline.noise_image_embeddings); the unconditional rows get zeros.

The embedding comes from one of three places, each a first stage before the one loop
(workflows/unclip.py): the model's CLIP vision encoder on a picture (image variations,
StableUnCLIPImg2ImgPipeline's layout), a prior (a PriorTransformer from the CLIP text embedding,
StableUnCLIPPipeline's layout, sampled here as that pipeline samples it), or zeros.

The parts beside the UNet travel in `components.unclip` (models/unclip_parts.py reads and writes them):
image_normalizer, image_noising_scheduler (a config), image_encoder and feature_extractor (or None),
prior, prior_text_encoder, prior_tokenizer, prior_scheduler (a config) (or None).
"""

from __future__ import annotations

import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import Family
from latentdiff.families.clip import Embeddings
from latentdiff.families.sd import SD
from latentdiff.families.unclip_tiny import tiny_unclip, unclip_index
from latentdiff.sampling.loop import draw_noise
from latentdiff.sampling.model_call import StepContexts

# Recommended settings: StableUnCLIPPipeline's prior defaults.
PRIOR_STEPS, PRIOR_GUIDANCE = 25, 4.0


class UnCLIP(SD):
    name, label = "unclip", "Stable unCLIP"
    variants = ("unclip", "unclip-decoder")  # tiny kinds: with a prior and an image encoder, or the decoder alone

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return unet.get("class_embed_type") == "projection"

    def variant(self, components) -> str:
        """ "unclip" with a prior or an image encoder beside the decoder, else "unclip-decoder"."""
        parts = components.unclip or {}
        return (
            "unclip" if parts.get("prior") is not None or parts.get("image_encoder") is not None else "unclip-decoder"
        )

    # No single-file layout carries the parts beside the UNet: no released configs (Family's refusal).
    released = Family.released

    def model_index(self, components, index: dict) -> dict:
        return unclip_index(components, index)

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        whole = variant != "unclip-decoder"
        return tiny_unclip(seed, image_encoder=whole, prior=whole)


def place_unclip(components, device, dtype) -> None:
    """The parts beside the UNet on `device` in `dtype` (the normaliser's statistics stay fp32)."""
    parts = components.unclip
    for name in ("image_encoder", "prior", "prior_text_encoder"):
        if parts.get(name) is not None:
            parts[name].to(device=device, dtype=dtype)
    if parts:
        parts["image_normalizer"].to(device)  # its own .to(torch_device, torch_dtype)


def with_labels(context, labels: torch.Tensor):
    """`context` (Embeddings, or a schedule of them) with `labels` (B, 2D) as each row's class label."""
    if isinstance(context, StepContexts):
        return StepContexts(tuple(with_labels(c, labels) for c in context.contexts), context.starts)
    if not isinstance(context, Embeddings):
        raise UsageError("a Stable unCLIP model takes no AND in the prompt (composable prompts)")
    return Embeddings(context.hidden, {**context.added, "class_labels": labels.to(context.hidden.device)})


def embedding_width(components) -> int:
    """The CLIP image embedding's width: half the UNet's class-embedding input."""
    return int(components.unet.config.projection_class_embeddings_input_dim) // 2


def max_noise_level(components) -> int:
    return int(components.unclip["image_noising_scheduler"].get("num_train_timesteps", 1000)) - 1


def check_noise_level(components, level) -> int:
    """`level` as a whole number from 0 to the image-noising scheduler's last timestep."""
    top = max_noise_level(components)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not float(level).is_integer():
        raise UsageError(f"noise_level must be a whole number from 0 to {top}, got {level!r}")
    if not 0 <= level <= top:
        raise UsageError(f"noise_level must be from 0 to {top} (the image-noising scheduler's steps), got {level:g}")
    return int(level)


def _scheduler(config: dict, default: str):
    import diffusers

    return getattr(diffusers, config.get("_class_name") or default).from_config(config)


@torch.no_grad()
def noised_embeddings(components, embeds: torch.Tensor, level: int, generators) -> torch.Tensor:
    """The class labels (B, 2D) of image embeddings `embeds` (B, D): normalised, noised to `level` with
    noise drawn from image k's generator, un-normalised, then the level's sinusoidal embedding."""
    noise = draw_noise(tuple(embeds.shape[1:]), generators).to(embeds.device, embeds.dtype)
    levels = torch.tensor([level] * embeds.shape[0], device=embeds.device)
    return noised_labels(components, embeds, levels, noise)


def noised_labels(components, embeds: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The class labels (B, 2D) of `embeds` (B, D) noised with `noise` (B, D) to `levels` (B,) (each
    row its own; training draws them at random), as StableUnCLIPPipeline.noise_image_embeddings."""
    from diffusers.models.embeddings import get_timestep_embedding

    parts = components.unclip
    normalizer = parts["image_normalizer"]
    x = normalizer.scale(embeds.to(normalizer.mean.dtype)).to(embeds.dtype)
    x = _scheduler(parts["image_noising_scheduler"], "DDPMScheduler").add_noise(x, noise, levels)
    x = normalizer.unscale(x.to(normalizer.mean.dtype)).to(embeds.dtype)
    level_embedding = get_timestep_embedding(levels, x.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat([x, level_embedding.to(x.dtype)], 1)


def check_image_encoder(components) -> None:
    if components.unclip.get("image_encoder") is None or components.unclip.get("feature_extractor") is None:
        raise UsageError(
            "variations need the model's CLIP image encoder (image_encoder/ and feature_extractor/, the "
            "StableUnCLIPImg2ImgPipeline layout); this unCLIP model has none"
        )


@torch.no_grad()
def image_embeddings(components, pictures: list) -> torch.Tensor:
    """The CLIP image embeddings (N, D) of PIL pictures, by the model's vision encoder and its processor."""
    check_image_encoder(components)
    return encode_pictures(components.unclip["image_encoder"], components.unclip["feature_extractor"], pictures)


@torch.no_grad()
def encode_pictures(encoder, processor, pictures: list) -> torch.Tensor:
    """(N, D): PIL pictures through a CLIP image processor and CLIPVisionModelWithProjection."""
    pixels = processor(images=pictures, return_tensors="pt").pixel_values
    return encoder(pixels.to(encoder.device, encoder.dtype)).image_embeds


def prior_text(parts, texts: list[str]):
    """(text embeds (B, D), last hidden states (B, T, W), attention mask (B, T)) of the prior's encoder."""
    tok, encoder = parts["prior_tokenizer"], parts["prior_text_encoder"]
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    out = encoder(ids.input_ids.to(encoder.device))
    return out.text_embeds, out.last_hidden_state, ids.attention_mask.bool().to(encoder.device)


@torch.no_grad()
def prior_embeddings(parts: dict, texts: list[str], steps: int, guidance: float, generators, kandinsky=False):
    """CLIP image embeddings (B, D) sampled by the prior of `parts` (Components.unclip, or a Kandinsky
    2.2 or Karlo prior's) from the texts, as StableUnCLIPPipeline (`kandinsky`: KandinskyV22PriorPipeline
    and Karlo's UnCLIPPipeline, whose steps name the previous timestep) samples them: the latents from image k's generator, CFG against
    the empty text above guidance 1, the scheduler's steps drawing their noise from the same generators."""
    if parts.get("prior") is None:
        raise UsageError("this unCLIP model has no prior (prior/, prior_text_encoder/): give variations= or a prior")
    prior = parts["prior"]
    cfg = guidance > 1.0
    text = prior_text(parts, texts)
    if cfg:
        text = tuple(torch.cat([u, c]) for u, c in zip(prior_text(parts, [""] * len(texts)), text))
    sched = _scheduler(parts["prior_scheduler"], "UnCLIPScheduler")
    sched.set_timesteps(steps)
    latents = draw_noise((prior.config.embedding_dim,), generators).to(prior.device, prior.dtype)
    latents = latents * sched.init_noise_sigma
    gen = generators[0] if len(generators) == 1 else list(generators)
    timesteps = sched.timesteps
    for i, t in enumerate(timesteps):
        x = torch.cat([latents] * 2) if cfg else latents
        x = x if kandinsky else sched.scale_model_input(x, t)
        pred = prior(
            x, timestep=t, proj_embedding=text[0], encoder_hidden_states=text[1], attention_mask=text[2]
        ).predicted_image_embedding
        if cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance * (cond - uncond)
        prev = {"prev_timestep": timesteps[i + 1] if i + 1 < len(timesteps) else None} if kandinsky else {}
        latents = sched.step(pred, timestep=t, sample=latents, generator=gen, return_dict=False, **prev)[0]
    return prior.post_process_latents(latents)
