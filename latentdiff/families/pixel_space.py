"""Where a latent model has its VAE, a pixel model (families/pixel.py) has PixelSpace: the identity,
with the config fields the loops read, so batches, caching and decoding work on pixels unchanged."""

from __future__ import annotations

import torch

PIXEL_VAE = "PixelSpace"  # the class name PixelSpace's config reports (family detection)
# The fields of an AutoencoderKL config that the loops read, as a pixel model reports them.
PIXEL_CONFIG = dict(
    _class_name=PIXEL_VAE, latent_channels=3, scaling_factor=1.0, block_out_channels=(3,), sample_size=None
)


class PixelSpace(torch.nn.Module):
    """The identity where a latent model has its VAE: images are their own 'latents' ((B, 3, H, W) in
    [-1, 1]), with the fields of an AutoencoderKL config that the loops read."""

    def __init__(self):
        from diffusers.configuration_utils import FrozenDict

        super().__init__()
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # carries device and dtype
        self.config = FrozenDict(PIXEL_CONFIG)

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def encode(self, pixels: torch.Tensor):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        # mean = pixels, log-variance -inf: every sample is the image itself
        params = torch.cat([pixels, torch.full_like(pixels, -30.0)], dim=1)
        return _Out(latent_dist=DiagonalGaussianDistribution(params, deterministic=True))

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        return _Out(sample=latents)


class _Out(dict):
    __getattr__ = dict.__getitem__


def is_pixel(vae_config: dict) -> bool:
    return vae_config.get("_class_name") == PIXEL_VAE
