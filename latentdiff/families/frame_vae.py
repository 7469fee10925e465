"""A one-frame video VAE (Qwen-Image's AutoencoderKLQwenImage, Wan's layout) seen as an image VAE:
(B, 3, H, W) pixels in, (B, C, h, w) latents out, normalised per channel by the config's
latents_mean and latents_std inside encode and decode, so the workflows' starts and decode (which
apply `scaling_factor` and `shift_factor`) see scaling 1 and no shift, as for any other VAE.
Saved as the wrapped module (the folder diffusers reads)."""

from __future__ import annotations

import torch

from latentdiff.families.vae_view import VAEView


class FrameConfig(dict):
    """The wrapped VAE's config with the image-VAE names the workflows read: latent_channels,
    block_out_channels (one more than its downsamplings, so 2**(n-1) is its factor), scaling 1."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class FrameVAE(VAEView):
    def __init__(self, vae):
        c = vae.config
        downs = len(c.temperal_downsample)
        config = FrameConfig(
            {**c, "latent_channels": c.z_dim, "block_out_channels": [c.base_dim] * (downs + 1), "scaling_factor": 1.0}
        )
        config["shift_factor"] = None
        config["force_upcast"] = False
        super().__init__(vae, config)

    @property
    def decoder(self):
        return self.vae.decoder  # what runtime/compile.py compiles

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.vae.config
        shape = (1, c.z_dim, 1, 1)
        mean = torch.tensor(c.latents_mean).view(shape).to(like.device, like.dtype)
        return mean, torch.tensor(c.latents_std).view(shape).to(like.device, like.dtype)

    def posterior(self, pixels: torch.Tensor):
        """The posterior of one-frame videos."""
        return self.vae.encode(pixels[:, :, None]).latent_dist

    def to_loop(self, z: torch.Tensor) -> torch.Tensor:
        z = z[:, :, 0]
        mean, std = self._stats(z)
        return (z - mean) / std

    def from_loop(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x * std + mean)[:, :, None]

    def decoded(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample[:, :, 0]
