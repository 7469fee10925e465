"""The model families, first match wins: adding a family is a module in families/ and a row here.

`family_of(components)` answers for a loaded model, `family_for(unet, vae, index)` for configs
alone (a folder not loaded yet), `FAMILIES[name]` by name."""

from __future__ import annotations

from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.families.base import Family
from latentdiff.families.chroma import Chroma
from latentdiff.families.flux import Flux
from latentdiff.families.flux2 import Flux2
from latentdiff.families.pixel import PixelBase, PixelSR
from latentdiff.families.qwen_image import QwenImage
from latentdiff.families.sd import SD
from latentdiff.families.sd3 import SD3
from latentdiff.families.sdxl import SDXL
from latentdiff.families.unclip import UnCLIP
from latentdiff.families.upscaler import Upscaler
from latentdiff.families.z_image import ZImage
from latentdiff.runtime.reading import read_json

# Order matters: the more particular families first (a pixel SR stage's 6 channels are 3 + 3, as the x4
# upscaler's are latents + 3); SD takes any other UNet on CLIP text.
_ORDER = (Flux2(), Chroma(), Flux(), SD3(), QwenImage(), ZImage(), PixelBase(), PixelSR(), Upscaler(), UnCLIP())
FAMILIES: dict[str, Family] = {f.name: f for f in (*_ORDER, SDXL(), SD())}


def family_for(unet: dict, vae: dict, index: dict | None = None) -> Family:
    """The family of a model with these configs (denoiser, VAE, model_index.json)."""
    for family in FAMILIES.values():
        if family.matches(unet, vae, index or {}):
            return family
    raise ModelError(f"no model family knows a denoiser with the config {sorted(unet)[:5]}...")


def family_of(components) -> Family:
    """The family of a loaded model."""
    return family_for(dict(components.unet.config), dict(components.vae.config), components.index)


def family_of_folder(path: Path) -> Family:
    """The family of a diffusers-layout model folder, from its configs alone."""

    def read(name: str) -> dict:
        f = Path(path) / name
        if not f.exists():
            return {}
        config = read_json(f, "config", error=ModelError)  # bounded in size and depth, a FIFO refused
        if not isinstance(config, dict):
            raise ModelError(f"config {f} must hold a JSON object, not {type(config).__name__}")
        return config

    denoiser = read("transformer/config.json") or read("unet/config.json")  # a transformer family's, or a UNet
    return family_for(denoiser, read("vae/config.json"), read("model_index.json"))


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise ModelError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_with_variant(variant: str) -> Family:
    """The family one of whose `variants` (a released architecture: sd1, sd2, sdxl, ...) is `variant`."""
    for family in FAMILIES.values():
        if variant in family.variants:
            return family
    raise ModelError(
        f"unknown model variant {variant!r}; known: {', '.join(v for f in FAMILIES.values() for v in f.variants)}"
    )
