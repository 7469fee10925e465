"""A family's VAE as the workflows see an image VAE (FLUX.2's patched latents, Qwen-Image's one-frame
video VAE): `encode(pixels).latent_dist` with sample/mode/mean and `decode(latents).sample` in the
loop's latent space, `dtype` and `device` the wrapped VAE's, saved as the VAE it wraps. A view
gives its config and the three maps between the VAE's own latents and the loop's."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from latentdiff.runtime.offload import execution_device


class _Posterior:
    """The wrapped VAE's posterior, its draws mapped into the loop's latent space."""

    def __init__(self, dist, to_loop):
        self.dist, self.to_loop = dist, to_loop

    def sample(self, generator=None) -> torch.Tensor:
        return self.to_loop(self.dist.sample(generator=generator))

    def mode(self) -> torch.Tensor:
        return self.to_loop(self.dist.mode())

    @property
    def mean(self) -> torch.Tensor:
        return self.mode()

    @property
    def std(self) -> torch.Tensor:
        """The spread in the loop's space (the maps are affine: the image of mean + std less the mean's)."""
        return self.to_loop(self.dist.mean + self.dist.std) - self.mean


class VAEView(torch.nn.Module):
    def __init__(self, vae, config):
        super().__init__()
        self.vae, self.config = vae, config

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def device(self) -> torch.device:
        return execution_device(self.vae)

    def posterior(self, pixels: torch.Tensor):
        """The wrapped VAE's posterior of (B, 3, H, W) pixels."""
        return self.vae.encode(pixels).latent_dist

    def to_loop(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's latents -> the loop's."""
        raise NotImplementedError

    def from_loop(self, x: torch.Tensor) -> torch.Tensor:
        """The loop's latents -> the VAE's decoder input."""
        raise NotImplementedError

    def decoded(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's pixels of its own latents `z`."""
        return self.vae.decode(z).sample

    def encode(self, pixels: torch.Tensor):
        return SimpleNamespace(latent_dist=_Posterior(self.posterior(pixels), self.to_loop))

    def decode(self, latents: torch.Tensor):
        return SimpleNamespace(sample=self.decoded(self.from_loop(latents)))

    def save_pretrained(self, *args, **kwargs):
        return self.vae.save_pretrained(*args, **kwargs)
