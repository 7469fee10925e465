"""The cascade's second stage: a diffusion upscaler in diffusers' StableDiffusionUpscalePipeline
format (the Stable Diffusion x4 upscaler's architecture), on the same sampling loop.

It is one more conditioning, not another loop: the low-res image, noised to `noise_level` by the
model's low-res scheduler, is concatenated to the latents (which have the low-res image's size)
and the noise level is the UNet's class label (Saharia et al. 2022, "noise conditioning
augmentation"). Large images go through the UNet in overlapping latent tiles whose predictions
are blended every step (MultiDiffusion, Bar-Tal et al. 2023), and through the VAE decoder in the
same blended windows, so memory is bounded by the tile size and no seam appears.
"""

from __future__ import annotations

import torch

from latentdiff.config.request import Request
from latentdiff.errors import UsageError
from latentdiff.families.upscaler import low_res_channels, upscaler_settings
from latentdiff.images.record import record
from latentdiff.images.write import a1111_line, to_pil
from latentdiff.models.configs import own_upscaler
from latentdiff.runtime.device import DTYPE_NAMES
from latentdiff.runtime.threads import generation_threads
from latentdiff.sampling.loop import denoise, make_scheduler
from latentdiff.sampling.model_call import Inputs
from latentdiff.sampling.wrappers import Tiled
from latentdiff.workflows.source import pad, pixel_hash, read_picture
from latentdiff.workflows.start import to_tensor

# diffusers' StableDiffusionUpscalePipeline defaults
UPSCALE_STEPS, UPSCALE_GUIDANCE, NOISE_LEVEL = 75, 9.0, 20


def with_model_upscaler(pipe, opts):
    """`opts` with the model's own upscaler filled in: the folder that the model's latentdiff.json
    names as "upscaler" (inside the model folder), unless the call named one or said upscale=False."""
    import dataclasses

    if opts.upscaler or not opts.upscale:
        return opts
    path = model_upscaler(pipe)
    return opts if path is None else dataclasses.replace(opts, upscaler=path)


def model_upscaler(pipe) -> str | None:
    """The folder of the model's own upscaler (latentdiff.json's "upscaler", inside the model folder),
    or None where it names none."""
    return own_upscaler(pipe.model_dir, pipe.components.defaults)


def load_upscaler(pipe, ref):
    """The upscaler `ref` (a model reference or a Pipeline) on `pipe`'s device and dtype, loaded
    once per `pipe` and kept (as a pipeline of `pipe`'s own class: workflows do not import pipeline.py)."""
    Pipeline = type(pipe)
    if isinstance(ref, Pipeline):
        return ref
    if ref is None:
        raise UsageError(f"{pipe.model_ref} is not a diffusion upscaler; pass upscaler=MODEL")
    cache = pipe.upscalers
    if ref not in cache:
        model = type(pipe).from_pretrained(ref, device=str(pipe.device), dtype=DTYPE_NAMES.get(pipe.dtype, "auto"))
        if not model.is_upscaler:
            raise UsageError(f"{ref} is not a diffusion upscaler (its UNet does not take the low-res image)")
        cache[ref] = model
    cache[ref].progress = pipe.progress
    return cache[ref]


@torch.no_grad()
def upscale(
    pipe,
    image,
    prompt: str = "",
    negative_prompt: str = "",
    steps=None,
    guidance=None,
    noise_level: int | None = None,
    seed: int = 0,
    scheduler=None,
    tile: int | None = None,
):
    """`image` (a path or PIL image) upscaled by the upscaler `pipe`: a PIL image with metadata.
    Steps, guidance and noise level left out are the upscaler's latentdiff.json values, else
    diffusers' defaults for StableDiffusionUpscalePipeline."""
    low, path = read_picture(image, "image to upscale")
    c = pipe.components
    settings = upscaler_settings(c)
    steps = c.defaults.get("steps", UPSCALE_STEPS) if steps is None else steps
    guidance = c.defaults.get("guidance", UPSCALE_GUIDANCE) if guidance is None else guidance
    noise_level = c.defaults.get("noise_level", NOISE_LEVEL) if noise_level is None else noise_level
    _check_args(steps, guidance, noise_level, settings["max_noise_level"], seed, tile)
    m = 2 ** (len(c.unet.config.block_out_channels) - 1)  # the UNet halves the size this many times
    padded = pad(low, (0, -low.width % m, 0, -low.height % m))  # repeated edges; cropped off after
    pixels = to_tensor(padded).to(pipe.device)
    use_cfg = guidance != 1.0
    cond, uncond = pipe.conditioning([prompt], [negative_prompt] if use_cfg else None, *pixels.shape[2:])
    sched = make_scheduler(c.scheduler_config, scheduler)
    sched.set_timesteps(int(steps))  # on the CPU: see sampling.denoise
    low_sched = make_scheduler(settings["low_res_scheduler"])
    g = torch.Generator("cpu").manual_seed(seed)
    # The draws in diffusers' order: the low-res image's noise, then the latents'.
    level = torch.tensor([noise_level], dtype=torch.long, device=pipe.device)
    channels = low_res_channels(low_sched, pixels, torch.randn(pixels.shape, generator=g).to(pipe.device), level)
    shape = (1, c.vae.config.latent_channels, *pixels.shape[2:])
    latents = (torch.randn(shape, generator=g) * sched.init_noise_sigma).to(pipe.device)
    latent_tile = None if tile is None else tile_in_latents(tile, pipe.scale_factor, m)
    model = pipe.family.denoiser(c)
    model = model if tile is None else Tiled(model, latent_tile)
    cond, uncond = Inputs(cond, channels), None if uncond is None else Inputs(uncond, channels)
    with generation_threads(pipe):
        latents = denoise(model, sched, latents, cond, uncond, guidance, [g], pipe.progress_bar(1))
        out = to_pil(pipe.decode(latents, tile=latent_tile))[0]
    f = out.width // padded.width
    out = out.crop((0, 0, low.width * f, low.height * f))
    request = Request(
        prompts=(prompt,),
        negative_prompt=negative_prompt,
        steps=int(steps),
        guidance=float(guidance),
        width=out.width,
        height=out.height,
        seed=seed,
        num_images=1,
        scheduler=scheduler,
    )
    info = {
        **record(pipe, request, prompt, seed),
        "upscale_of": path,
        "upscale_of_hash": pixel_hash(low),
        "noise_level": noise_level,
        "tile": tile,
    }
    out.info["latentdiff"], out.info["parameters"] = info, a1111_line(info)
    return out


def _check_args(steps, guidance, noise_level, max_level, seed, tile) -> None:
    if int(steps) != steps or steps < 1:
        raise UsageError(f"steps must be a whole number >= 1, got {steps}")
    if guidance < 0:
        raise UsageError(f"guidance must be >= 0, got {guidance}")
    if int(noise_level) != noise_level or not 0 <= noise_level <= max_level:
        raise UsageError(
            f"noise level must be a whole number from 0 to {max_level} (this model's maximum), got {noise_level}"
        )
    if int(seed) != seed or seed < 0:
        raise UsageError(f"seed must be a whole number >= 0, got {seed}")
    if tile is not None and (int(tile) != tile or tile < 64):
        raise UsageError(f"tile must be at least 64 px, got {tile}")


def tile_in_latents(tile: int, factor: int, m: int) -> int:
    """The latent tile for `tile` output pixels: a multiple of m, the factor the UNet halves by."""
    return max(m, tile // factor // m * m)
