"""Pixel-space cascades in DeepFloyd IF's layout (Saharia et al. 2022, Imagen): a base UNet that
denoises the image itself (IFPipeline, stage I) and super-resolution stages (IFSuperResolutionPipeline,
stage II) whose input is the noisy image plus the low-res image, upsampled bilinearly to its size and
noised to a noise level by the stage's image-noising scheduler; the level is the class label
(noise conditioning augmentation). Both predict the noise and, with out_channels = 2 x 3, a learned
variance (Nichol & Dhariwal 2021, `variance_type="learned_range"`); the scheduler samples with
dynamic thresholding (`thresholding=True`, the Imagen paper's percentile clip).

There is no VAE: `PixelSpace` stands where the VAE sits (encode and decode are the identity, factor
1), so the training loop's batches and caching work on pixels unchanged. The text encoder is an
existing model's (IF uses a frozen T5; ours share the base model's CLIP encoder)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latentdiff.errors import UsageError
from latentdiff.families.pixel_space import is_pixel
from latentdiff.families.pixel_tiny import tiny_pixel
from latentdiff.families.unet import UNetCall, UNetFamily
from latentdiff.sampling.model_call import ImageChannels, Inputs

LEARNED = ("learned", "learned_range")


class PixelCall(UNetCall):
    """An IF UNet as a Denoiser. With a learned variance, classifier-free guidance mixes only the
    noise half (IFPipeline: the variance is the conditional row's); the loop guides every channel,
    so under CFG the unconditional rows get the conditional rows' variance, which makes
    v_u + g (v_c - v_u) = v_c exactly. `learned`: whether the scheduler reads the variance (DDPM with
    learned_range); otherwise only the noise half is returned, as IFPipeline drops the rest."""

    def __init__(self, unet, learned: bool):
        super().__init__(unet)
        self.learned = learned

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        out = super().__call__(x, t, inputs)  # (B, 2C or C, h, w)
        c = x.shape[1]
        if out.shape[1] == c or not self.learned:
            return out[:, :c]
        return guided_variance(out, c) if inputs.guided else out


def guided_variance(out: torch.Tensor, c: int) -> torch.Tensor:
    """(2B, 2C, h, w) unconditional rows then conditional -> the same with the conditional rows'
    variance channels in both halves."""
    u, v = out.chunk(2)
    return torch.cat([torch.cat([u[:, :c], v[:, c:]], dim=1), v])


def sr_channels(noising_scheduler, low: torch.Tensor, noise: torch.Tensor, level: torch.Tensor, size) -> ImageChannels:
    """The low-res image (B, 3, h, w) in [-1, 1] upsampled bilinearly to `size` (H, W) (corners
    aligned, as IFSuperResolutionPipeline), noised to `level` (B,) by the image-noising scheduler;
    the level is the class label. `noise`: (B, 3, H, W)."""
    up = F.interpolate(low, tuple(size), mode="bilinear", align_corners=True)
    return ImageChannels(noising_scheduler.add_noise(up, noise, level), class_labels=level)


def check_noise_level(level, most: int) -> None:
    number = isinstance(level, (int, float)) and not isinstance(level, bool) and math.isfinite(level)
    if not number or int(level) != level or not 0 <= level <= most:
        raise UsageError(
            f"noise level must be a whole number from 0 to {most} (this stage's maximum), got {str(level)[:40]}"
        )


class PixelFamily(UNetFamily):
    """What the pixel base and SR families share: the PixelSpace 'VAE', the IF model call."""

    def is_mine(self, vae: dict, index: dict) -> bool:
        """Loaded (PixelSpace for the VAE) or on disk (IF's pipeline class, no vae/)."""
        return is_pixel(vae) or (not vae and index.get("_class_name") == self.pipeline_class)

    def denoiser(self, components, guidance: float | None = None):
        variance = components.scheduler_config.get("variance_type")
        return PixelCall(components.unet, variance in LEARNED)

    def model_index(self, components, index: dict) -> dict:
        """IF's pipeline arguments: no VAE; the text encoder is ours (CLIP), the rest empty."""
        index = {k: v for k, v in index.items() if k not in ("vae", "image_encoder")}
        none = dict(safety_checker=[None, None], feature_extractor=[None, None], watermarker=[None, None])
        out = {**index, **none, "_class_name": self.pipeline_class, "requires_safety_checker": False}
        if components.text_encoder is None:  # a stage that reads the base model's text encoder
            out.update(text_encoder=[None, None], tokenizer=[None, None])
        if self.upscales:
            out["image_noising_scheduler"] = ["diffusers", "DDPMScheduler"]
        return out


class PixelBase(PixelFamily):
    name, label = "pixel", "pixel base (IF stage I)"
    variants = ("if-base",)
    pipeline_class = "IFPipeline"

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return self.is_mine(vae, index) and unet.get("in_channels") == 3

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_pixel(seed, sr=False)


class PixelSR(PixelFamily):
    name, label = "pixel-sr", "pixel super-resolution (IF stage II)"
    variants = ("if-sr",)
    upscales = True
    pipeline_class = "IFSuperResolutionPipeline"

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return self.is_mine(vae, index) and unet.get("in_channels") == 6

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_pixel(seed, sr=True)
