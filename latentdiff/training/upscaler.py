"""Training a diffusion upscaler (StableDiffusionUpscalePipeline layout) or a pixel super-resolution
stage (IFSuperResolutionPipeline layout, families/pixel.py) on finetune's loop.

It is the same loop, batches and loss with one more conditioning, as at inference (upscale.py):
the low-res image is the training image downsampled by the VAE's factor (bicubic, antialiased),
so it has the latents' size; it is noised by the model's low-res scheduler to a random level in
[0, max_noise_level] and concatenated to the noisy latents, and the level is the UNet's class
label (noise conditioning augmentation, Saharia et al. 2022; Ho et al. 2021, cascaded diffusion).
A pixel stage's low-res image is the image downsampled by its `scale`, upsampled bilinearly back
to the image's size before the noise (as IFSuperResolutionPipeline feeds it).
Every draw comes from the step generator, so resume stays exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentdiff.families.pixel import sr_channels
from latentdiff.families.pixel_space import is_pixel
from latentdiff.families.upscaler import low_res_channels, upscaler_settings
from latentdiff.models.components import vae_scale_factor
from latentdiff.sampling.loop import make_scheduler
from latentdiff.sampling.model_call import ImageChannels
from latentdiff.training.batches import BatchSource


def downsample(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, H / factor, W / factor): antialiased bicubic, as PIL's
    BICUBIC reduce, so the low-res image looks like a picture made at that size."""
    small = F.interpolate(pixels.float(), scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    return small.clamp(-1, 1)


def noise_augment(low: torch.Tensor, scheduler, max_level: int, gen: torch.Generator, size=None) -> ImageChannels:
    """The low-res image noised to a random level in [0, max_level] per sample; the level is the class
    label. `size` (H, W): a pixel SR stage's, which first upsamples the low-res image to it."""
    level = torch.randint(0, max_level + 1, (low.shape[0],), generator=gen)
    if size is None:
        return low_res_channels(scheduler, low, torch.randn(low.shape, generator=gen), level)
    return sr_channels(scheduler, low, torch.randn((low.shape[0], 3, *size), generator=gen), level, size)


def sr_factor(components) -> int:
    """How much the stage enlarges: the VAE's factor (the x4 upscaler's latents have the low-res
    image's size), or a pixel SR stage's `scale` (its latentdiff.json; IF's stage II: 4)."""
    if is_pixel(components.vae.config):
        return int(components.defaults.get("scale", 4))
    return vae_scale_factor(components.vae)


class UpscalerSource(BatchSource):
    """BatchSource + the low-res image of each sample: of the same pixels (crop and flip) its latents
    come from. With caching, the low-res images are computed once beside the latents (a flipped
    view's is the flipped low-res image: the symmetric bicubic kernel commutes with the flip)."""

    def __init__(self, components, dataset, *args, **kwargs):
        settings = upscaler_settings(components)
        self.low_res_scheduler = make_scheduler(settings["low_res_scheduler"])
        self.max_level = settings["max_noise_level"]
        self.factor = sr_factor(components)
        self.pixel = is_pixel(components.vae.config)
        self.low = None  # (B, 3, h, w): the low-res images of the last latents() batch
        self.low_cache = []  # per image, filled by the caching pre-pass (_views)
        super().__init__(components, dataset, *args, **kwargs)
        if self.posteriors is None:
            self.low_cache = None

    def _views(self, pixels: torch.Tensor) -> list:
        """As BatchSource._views, keeping the batch's low-res images."""
        self.low_cache += list(downsample(pixels, self.factor))
        return super()._views(pixels)

    def latents(self, indices: list[int], gen: torch.Generator, epoch: int):
        """As BatchSource.latents (the same draws), keeping the low-res images for image_cond."""
        out = super().latents(indices, gen, epoch)
        if self.low_cache is None:
            self.low = downsample(self.picked, self.factor)
        else:
            self.low = torch.stack([self.low_cache[i].flip(-1) if v else self.low_cache[i] for i, v in self.picked])
        return out

    def image_cond(self, indices: list[int], gen: torch.Generator) -> ImageChannels:
        size = self.low.shape[2] * self.factor, self.low.shape[3] * self.factor
        cond = noise_augment(self.low, self.low_res_scheduler, self.max_level, gen, size if self.pixel else None)
        return ImageChannels(cond.concat.to(self.device), cond.class_labels.to(self.device))
