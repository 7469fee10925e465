"""Hires fix: the image made at the model's native size, upscaled, then img2img at the target
size with the same seeds (so the first pass is exactly the image made without --hires)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.config.params import hires_size
from latentdiff.config.upscalers import LATENT_UPSCALERS
from latentdiff.images.write import to_pil
from latentdiff.workflows import a1111_path, a1111_upscale


def hires_pass(pipe, latents, cond, uncond, texts, seeds, request, refiner=None, refined=False) -> torch.Tensor:
    """The second pass over the first pass's `latents` (`request`: config.request.Request): pixels
    in [-1, 1] at the target size. On A1111's path with an SDXL refiner: `refiner` its switch
    (a1111_path.refiner_switch) where it takes over inside this pass (A1111's "Hires refiner" second and
    both passes) and then decodes; `refined`: the first pass ended on it, which decodes it for a pixel upscaler."""
    o = request.options
    size = hires_size(request.width, request.height, o.hires, pipe.scale_factor)
    steps = pass_steps(request)
    if o.hires_upscaler in LATENT_UPSCALERS or request.a1111 is not None:  # the pass from upscaled latents
        up = _upscaled_latents(pipe, latents, size, o.hires_upscaler, pipe.refiner if refined else pipe)
        start = {"init_latents": up, "strength": o.hires_strength, **({"refiner": refiner} if refiner else {})}
        z = pipe.run_loop(cond, uncond, seeds, request, steps, size, **start)
        return (pipe.refiner if refiner is not None and refiner.took_over else pipe).decode(z)
    out = []
    for k, base in enumerate(to_pil(pipe.decode(latents))):
        big = _upscale(pipe, base, o, texts[k], seeds[k], size)
        one = slice(k, k + 1)
        z = pipe.run_loop(
            cond[one],
            None if uncond is None else uncond[one],
            seeds[one],
            request,
            steps,
            size,
            image=big,
            strength=o.hires_strength,
        )
        out.append(pipe.decode(z))
    return torch.cat(out)


def pass_steps(request) -> int:
    """The hires pass's steps: on diffusers' path the schedule it runs int(steps * strength) of; on
    A1111's path the steps it runs (A1111's hr_second_pass_steps, on a schedule of steps / strength),
    as many as diffusers' path runs of `hires_steps` (how the infotext reads and writes them)."""
    o = request.options
    if request.a1111 is None or not o.hires_steps:
        return o.hires_steps or request.steps
    return int(o.hires_steps * o.hires_strength) or request.steps


def _upscaled_latents(pipe, latents: torch.Tensor, size: tuple[int, int], upscaler: str, decoder=None) -> torch.Tensor:
    """A1111's start of the hires pass: the latents by a latent mode as it calls torch, or the pictures
    (decoded by `decoder`, default `pipe`) by a pixel upscaler (workflows/a1111_upscale.py) encoded again by `pipe`."""
    if upscaler in LATENT_UPSCALERS:
        f, (_, mode, antialias) = pipe.scale_factor, LATENT_UPSCALERS[upscaler]
        return F.interpolate(latents, size=(size[1] // f, size[0] // f), mode=mode, antialias=antialias)
    decoded = (decoder or pipe).decode(latents)
    pictures = [a1111_upscale.resize(pipe, im, size, upscaler) for im in a1111_upscale.to_uint8(decoded)]
    return a1111_path.encode(pipe, pictures)


def _upscale(pipe, base: Image.Image, o, prompt: str, seed: int, size: tuple[int, int]) -> Image.Image:
    if a1111_upscale.is_pixel_upscaler(o.hires_upscaler):
        return a1111_upscale.resize(pipe, base, size, o.hires_upscaler)
    base = pipe.upscale(base, prompt=prompt, seed=seed, tile=o.tile, upscaler=o.hires_upscaler)  # a diffusion upscaler
    return base.resize(size, Image.Resampling.LANCZOS)
