"""Wrappers around a denoiser (sampling/model_call.py): each is a Denoiser itself, so the loop
runs them unchanged."""

from __future__ import annotations

from dataclasses import replace

import torch

from latentdiff.sampling.model_call import ImageChannels, Inputs


class Tiled:
    """The denoiser applied to overlapping `tile` x `tile` latent windows (blend_windows), so every
    latent pixel gets one consistent prediction per step and tile borders leave no seam. Image
    channels are cut to the same windows; other inputs go to every window whole."""

    def __init__(self, denoiser, tile: int):
        self.denoiser, self.tile = denoiser, tile
        self.dtype = denoiser.dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        def run(window, where):
            return self.denoiser(window, t, _window_of(inputs, where))

        return blend_windows(x, self.tile, run, with_where=True)


def _window_of(inputs: Inputs, where) -> Inputs:
    ch = inputs.channels
    if ch is None or where is None:
        return inputs
    return replace(inputs, channels=ImageChannels(ch.concat[where], ch.class_labels))


def blend_windows(x: torch.Tensor, tile: int, run, scale: int = 1, with_where: bool = False) -> torch.Tensor:
    """`run` over overlapping `tile` x `tile` windows of x (B, C, h, w), its outputs (B, C', tile *
    scale, ...) averaged with weights that fall off towards each window's edge (MultiDiffusion,
    Bar-Tal et al. 2023): a denoiser per step (scale 1) and the VAE decoder (scale = its factor)
    use the same windows. x no larger than one tile: `run(x)` itself. `with_where`: `run(window,
    where)` also gets the window's index into x (None when x is one window)."""
    h, w = x.shape[-2:]
    call = run if with_where else (lambda window, where: run(window))
    if h <= tile and w <= tile:
        return call(x, None)
    out = total = None
    for top in _starts(h, tile):
        for left in _starts(w, tile):
            inside = (Ellipsis, slice(top, top + tile), slice(left, left + tile))
            y = call(x[inside], inside).float()
            if out is None:
                out = torch.zeros((*y.shape[:2], h * scale, w * scale), device=y.device)
                total = torch.zeros((1, 1, h * scale, w * scale), device=y.device)
            weight = _ramp(*y.shape[-2:], device=y.device)
            where = (
                Ellipsis,
                slice(top * scale, top * scale + y.shape[-2]),
                slice(left * scale, left * scale + y.shape[-1]),
            )
            out[where] += y * weight
            total[where] += weight
    return out / total


def _starts(size: int, tile: int) -> list[int]:
    """Window offsets covering `size` with about a quarter tile of overlap, the last flush with the end."""
    if size <= tile:
        return [0]
    stride = max(1, tile * 3 // 4)
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(h: int, w: int, device) -> torch.Tensor:
    """(1, 1, h, w) weights: 1 in the middle, falling linearly to a small positive value at the edges."""

    def axis(n):
        i = torch.arange(n, device=device, dtype=torch.float32)
        return torch.minimum(i + 1, n - i).clamp(max=n / 4) / (n / 4)

    return (axis(h)[:, None] * axis(w)[None, :])[None, None]
