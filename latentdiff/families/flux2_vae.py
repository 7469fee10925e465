"""FLUX.2's VAE (AutoencoderKLFlux2) as the loop sees a VAE: its latents are the 2x2-patched
(B, 4C, h/2, w/2) tensors normalised by the VAE's batch-norm statistics, the space the transformer
denoises in and the one Flux2Pipeline draws its noise in. The rest of latentdiff (starts, decode,
tiling, previews) reads `config.latent_channels`, `config.scaling_factor`/`shift_factor`, the
factor `block_out_channels` implies, `encode(...).latent_dist` and `decode(...).sample`; this view
answers them for the patched space, so no workflow knows FLUX.2."""

from __future__ import annotations

import torch

from latentdiff.families.vae_view import VAEView


def patchify(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, 4C, h/2, w/2): each channel's 2x2 patch as 4 channels (Flux2Pipeline._patchify_latents)."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return z.reshape(b, c * 4, h // 2, w // 2)


def unpatchify(z: torch.Tensor) -> torch.Tensor:
    """The inverse of `patchify`."""
    b, c, h, w = z.shape
    z = z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return z.reshape(b, c // 4, h * 2, w * 2)


class PatchedLatents(VAEView):
    """An AutoencoderKLFlux2 whose latents are patched and normalised (see the module's docstring)."""

    def __init__(self, vae):
        c = vae.config
        config = type(c)(
            {
                **c,
                "latent_channels": 4 * c.latent_channels,
                "scaling_factor": 1.0,  # the batch norm below scales instead
                "shift_factor": None,
                # one level more: a latent pixel is a 2x2 patch, twice the VAE's own factor
                "block_out_channels": [*c.block_out_channels, c.block_out_channels[-1]],
            }
        )
        super().__init__(vae, config)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def to_loop(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's (B, C, h, w) latents -> the loop's (Flux2Pipeline._encode_vae_image)."""
        z = patchify(z)
        mean, std = self._stats(z)
        return (z - mean) / std

    def from_loop(self, x: torch.Tensor) -> torch.Tensor:
        """The loop's latents -> the VAE's, as Flux2Pipeline decodes them."""
        mean, std = self._stats(x)
        return unpatchify(x * std + mean)
