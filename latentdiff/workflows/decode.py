"""Latents to pixels through the VAE, with the NaN guard: a decode in a low precision that overflows
is redone in fp32, and a non-finite image is never returned."""

from __future__ import annotations

import warnings

import torch

from latentdiff.errors import LatentDiffError
from latentdiff.runtime.device import DTYPE_NAMES, notice
from latentdiff.runtime.memory import available_bytes, decode_tile
from latentdiff.sampling.wrappers import blend_windows


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, scale_factor: int, tile: int | None = None) -> torch.Tensor:
    """Latents -> pixels in [-1, 1]. `tile` (latent pixels): decode in blended windows
    (sampling.wrappers.blend_windows) to bound memory; None decodes in one piece where the memory
    holds it, else in the largest windows it holds (runtime/memory.decode_tile), saying so."""
    if tile is None:
        free = available_bytes(latents.device)
        tile = decode_tile(vae.config, latents.shape[0], *latents.shape[-2:], scale_factor, vae.dtype.itemsize, free)
        if tile is not None:
            notice(
                f"the VAE decode does not fit the free memory in one piece: decoding in {tile * scale_factor} px tiles"
            )
    z = latents / vae.config.scaling_factor
    shift = vae.config.get("shift_factor")  # Flux's VAE centres its latents; SD's has none
    z = z if shift is None else z + shift

    def run(z):  # in one piece (one window covers it all), or in blended windows of `tile`
        return blend_windows(z, tile or max(z.shape[-2:]), lambda w: vae.decode(w).sample, scale_factor)

    pixels = run(z.to(vae.dtype))
    if torch.isfinite(pixels).all():
        return pixels
    if vae.dtype != torch.float32:
        # fp16 despite force_upcast: vae_dtype tried it (CUDA) and it failed, so stay in fp32 from now on
        keep = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
        warnings.warn(
            f"VAE decode in {DTYPE_NAMES.get(vae.dtype)} overflowed; redoing it in fp32"
            + (" (and keeping this VAE in fp32, as its config asks)" if keep else ""),
            stacklevel=4,
        )
        dtype = vae.dtype
        vae.to(torch.float32)
        try:
            pixels = run(z.float())
        finally:
            if not keep:
                vae.to(dtype)
        if torch.isfinite(pixels).all():
            return pixels
    raise LatentDiffError("the decoded image contains NaN/inf even in fp32; the model or latents are broken")
