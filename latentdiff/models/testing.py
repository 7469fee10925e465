"""Tiny random models for tests and benchmarks (no downloads), written to disk. Each family builds
its own (families/<family>.py `tiny`); this module saves them in the diffusers layout."""

from __future__ import annotations

from pathlib import Path

from latentdiff.families.pixel_tiny import tiny_pixel
from latentdiff.families.registry import family_with_variant
from latentdiff.families.sd import WORDS, tiny_arch  # noqa: F401 (tests and benchmarks import them from here)
from latentdiff.families.sdxl import tiny_unet as tiny_sdxl_unet  # noqa: F401 (the same)
from latentdiff.families.unclip_tiny import tiny_kandinsky_prior
from latentdiff.models.components import Components, save_components
from latentdiff.runtime.files import as_umask_allows
from latentdiff.runtime.libraries import quiet_libraries


def make_tiny(out: Path, variant: str, seed: int = 0, defaults: dict | None = None, half: bool = False) -> Path:
    """Write a tiny seeded model of `variant` (sd1, sd2, sd1-inpaint, sdxl, sdxl_refiner, x4) to `out`;
    `half`: weights stored in fp16, as the shipped model's are."""
    quiet_libraries()
    family = family_with_variant(variant)
    c = Components(**{"defaults": dict(defaults or {}), **family.tiny(variant, seed)})
    if half:
        for m in (c.unet, c.vae, *c.text_encoders()):
            m.half()
    if family.name == "upscaler":
        _save_upscaler(c, Path(out))
    else:
        save_components(c, Path(out), c.scheduler_config["_class_name"])
    return Path(out)


def _save_upscaler(c: Components, out: Path) -> None:
    """As diffusers' StableDiffusionUpscalePipeline saves itself (the layout its users have)."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    pipe = StableDiffusionUpscalePipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        low_res_scheduler=DDPMScheduler.from_config(c.upscaler["low_res_scheduler"]),
        scheduler=DDIMScheduler.from_config(c.scheduler_config),
        max_noise_level=c.upscaler["max_noise_level"],
    )
    pipe.save_pretrained(out, safe_serialization=True)
    as_umask_allows(out)


def make_tiny_prior(out: Path, seed: int = 0) -> Path:
    """A tiny Kandinsky 2.2 prior, saved as diffusers' KandinskyV22PriorPipeline saves itself."""
    from diffusers import KandinskyV22PriorPipeline

    quiet_libraries()
    KandinskyV22PriorPipeline(**tiny_kandinsky_prior(seed)).save_pretrained(out, safe_serialization=True)
    as_umask_allows(out)
    return Path(out)


def make_tiny_model(
    out: Path, kind: str = "sd1", seed: int = 0, defaults: dict | None = None, half: bool = False
) -> Path:
    """A tiny SD model: kind sd1, sd2 or sd1-inpaint."""
    return make_tiny(out, kind, seed, defaults, half)


def make_tiny_upscaler(out: Path, seed: int = 0) -> Path:
    """A tiny model of the Stable Diffusion x4 upscaler's architecture, in diffusers'
    StableDiffusionUpscalePipeline format."""
    return make_tiny(out, "x4", seed)


def make_tiny_pixel_sr(out: Path, side: int = 32, seed: int = 0, defaults: dict | None = None) -> Path:
    """A tiny pixel SR stage (IF stage II layout) making `side` px images from side / 2 (text 32 wide,
    as the tiny SD models' encoders), with no VAE and no text encoder of its own."""
    quiet_libraries()
    parts = {**tiny_pixel(seed, sr=True, side=side), "text_encoder": None, "tokenizer": None}
    save_components(Components(**parts, defaults={"scale": 2, **(defaults or {})}), Path(out), "DDPMScheduler")
    return Path(out)


def make_tiny_sdxl(out: Path, refiner: bool = False, seed: int = 0) -> Path:
    """A tiny SDXL base (or refiner) in StableDiffusionXLPipeline's layout."""
    return make_tiny(out, "sdxl_refiner" if refiner else "sdxl", seed)


__all__ = [
    "WORDS",
    "make_tiny",
    "make_tiny_model",
    "make_tiny_prior",
    "make_tiny_pixel_sr",
    "make_tiny_sdxl",
    "make_tiny_upscaler",
    "tiny_arch",
    "tiny_sdxl_unet",
]
