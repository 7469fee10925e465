"""Pixel-space stages on the one loop: a base that denoises the image itself (IFPipeline's stage I)
and a super-resolution stage (IFSuperResolutionPipeline's stage II) whose input carries the low-res
image, upsampled and noised to a noise level (families/pixel.py). The prompt's embeddings come from
the caller (the cascade's base model encodes the prompt once for every stage that shares its text
encoder). Random draws in diffusers' order, per image k from its own generator: the image's noise,
then (SR) the augmentation noise; then the scheduler's per-step noise."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentdiff.errors import ModelError
from latentdiff.families.pixel import check_noise_level, sr_channels
from latentdiff.families.pixel_space import PixelSpace
from latentdiff.families.registry import family_of
from latentdiff.models.components import Components
from latentdiff.models.configs import DEFAULTS_FILE
from latentdiff.sampling.loop import denoise, draw_noise, make_scheduler
from latentdiff.sampling.model_call import Inputs


def pixel_components(unet, scheduler_config: dict, noising: dict | None = None, defaults=None) -> Components:
    """A pixel stage as Components (PixelSpace for the VAE; the text encoder is the caller's)."""
    upscaler = {} if noising is None else {"low_res_scheduler": noising, "max_noise_level": max_level(noising)}
    return Components(unet, PixelSpace(), None, None, dict(scheduler_config), dict(defaults or {}), upscaler=upscaler)


def max_level(noising: dict) -> int:
    """IFSuperResolutionPipeline accepts levels below the noising scheduler's training steps."""
    return int(noising.get("num_train_timesteps", 1000)) - 1


def load_pixel_stage(path: Path, device="cpu", dtype=torch.float32) -> Components:
    """A pixel stage folder in IF's layout (unet/, scheduler/, image_noising_scheduler/ for SR)."""
    from diffusers import UNet2DConditionModel

    path = Path(path)

    def config(name: str) -> dict | None:
        f = path / name / "scheduler_config.json"
        return json.loads(f.read_text()) if f.is_file() else None

    if not (path / "unet" / "config.json").is_file() or config("scheduler") is None:
        raise ModelError(f"{path} is not a pixel stage folder (unet/ and scheduler/ in IF's layout)")
    unet = UNet2DConditionModel.from_pretrained(path / "unet", use_safetensors=True).to(device, dtype).eval()
    defaults = path / DEFAULTS_FILE
    defaults = json.loads(defaults.read_text()) if defaults.is_file() else {}
    return pixel_components(unet, config("scheduler"), config("image_noising_scheduler"), defaults)


def _context(cond, uncond, channels=None):
    return Inputs(cond, channels), None if uncond is None else Inputs(uncond, channels)


@torch.no_grad()
def sample_pixels(c: Components, cond, uncond, size, steps: int, guidance: float, generators, scheduler=None, **loop):
    """Stage I: (B, 3, H, W) images in [-1, 1] for `size` (H, W) from noise."""
    sched = make_scheduler(c.scheduler_config, scheduler)
    sched.set_timesteps(int(steps))
    device = c.unet.device
    x = (draw_noise((3, *size), generators) * sched.init_noise_sigma).to(device)
    model = family_of(c).denoiser(c)
    return denoise(model, sched, x, *_context(cond, uncond), guidance, generators, **loop)


@torch.no_grad()
def super_resolve(c: Components, low, cond, uncond, steps: int, guidance: float, noise_level: int, generators, **loop):
    """Stage II: `low` (B, 3, h, w) in [-1, 1] -> (B, 3, H, W), H and W the UNet's sample size
    times low's aspect (IFSuperResolutionPipeline's height/width default to the sample size)."""
    check_noise_level(noise_level, c.upscaler["max_noise_level"])
    size = sr_size(c, low.shape[2:])
    sched = make_scheduler(c.scheduler_config, loop.pop("scheduler", None))
    sched.set_timesteps(int(steps))
    device = c.unet.device
    x = (draw_noise((3, *size), generators) * sched.init_noise_sigma).to(device)
    aug = draw_noise((3, *size), generators).to(device)
    level = torch.full((len(low),), int(noise_level), dtype=torch.long, device=device)
    channels = sr_channels(make_scheduler(c.upscaler["low_res_scheduler"]), low.to(device).float(), aug, level, size)
    model = family_of(c).denoiser(c)
    return denoise(model, sched, x, *_context(cond, uncond, channels), guidance, generators, **loop)


def sr_size(c: Components, low_size) -> tuple[int, int]:
    """The output size of an SR stage for a low-res (h, w): scaled by the stage's factor."""
    f = int(c.defaults.get("scale", 0)) or None
    if f is None:
        side = int(c.unet.config.sample_size)
        return (side, side) if low_size[0] == low_size[1] else (side * low_size[0] // max(low_size), side)
    return (low_size[0] * f, low_size[1] * f)
