"""Text to image by A1111's own path (sampling/a1111.py) when a call asks for A1111's noise: its
checks before any work, and the run of one batch. Image k's noise follows A1111's seed rules
(noise_a1111.py): seed + k, or with a variation strength the seed itself and variation seed + k."""

from __future__ import annotations

import inspect

import torch
from PIL import Image

from latentdiff.config.upscalers import LATENT_UPSCALERS
from latentdiff.errors import UsageError
from latentdiff.sampling import a1111, a1111_timesteps, k_samplers
from latentdiff.sampling.model_call import Inputs
from latentdiff.sampling.noise_a1111 import ImageNoise, check_rng, generator
from latentdiff.sampling.sampler_table import A1111_PATH, SAMPLERS
from latentdiff.sampling.schedulers import method_of, parse
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS
from latentdiff.sampling.unipc_settings import check_setting
from latentdiff.workflows.a1111_inpaint import Blend, fill, inpaint_channels, latent_mask, masked_start
from latentdiff.workflows.a1111_masked import of_source
from latentdiff.workflows.a1111_upscale import is_pixel_upscaler
from latentdiff.workflows.start import to_tensor

FAMILIES = ("sd", "sdxl")


def sampler_schedule(pipe, name: str | None) -> tuple[str, str]:
    """(sampler, schedule) keys the A1111 path runs for choice `name` (None: the model's own method)."""
    if name is None:
        own = method_of(pipe.components.scheduler_config)
        return (own, "automatic") if own else ("", "automatic")
    return parse(name, a1111=True)


def check(pipe, request) -> None:
    """One UsageError where the A1111 path cannot run this request (before any work)."""
    if request.a1111 is None:
        if request.source is not None and request.source.fill != "original":
            raise UsageError(
                f"masked content {request.source.fill} runs on A1111's own path: give an A1111 noise option "
                "(--rng nv or cpu); diffusers' path starts the masked area from the picture (original)"
            )
        return
    what = "A1111's noise (rng, variation seed, seed resize, ENSD)"
    check_rng(request.a1111.rng)  # "gpu" needs CUDA
    sampler, schedule = sampler_schedule(pipe, request.scheduler)
    if sampler not in A1111_PATH:
        names = ", ".join(SAMPLERS[k].a1111 for k in A1111_PATH)
        shown = SAMPLERS[sampler].a1111 if sampler in SAMPLERS else "the model's own scheduler"
        raise UsageError(f"{what} runs A1111's own samplers; {shown} is none of them: choose one of {names}")
    check_options(sampler, dict(request.sampler_options))
    check_schedule(pipe, sampler, schedule, what)
    if pipe.family.name not in FAMILIES:
        raise UsageError(f"{what} applies to SD 1.x/2.x and SDXL models, not {pipe.family.label}")
    o = request.options
    if pipe.refiner is not None and pipe.family.inpainting(pipe.components):
        raise UsageError(f"{what} runs an SDXL refiner after a base model, not after an inpainting model")
    if o is not None and o.hires and not (o.hires_upscaler in LATENT_UPSCALERS or is_pixel_upscaler(o.hires_upscaler)):
        raise UsageError(
            f"{what} runs the hires fix with A1111's latent and pixel upscalers and upscaler model files; "
            f"not the diffusion upscaler {o.hires_upscaler!r}"
        )
    if request.controls or request.image_prompts:
        raise UsageError(f"{what} runs without ControlNets and image prompts for now")


def check_schedule(pipe, sampler: str, schedule: str, what: str) -> None:
    """The schedule types A1111's sampler runs with: its timestep samplers pick their own timesteps;
    LCM takes Automatic and the sigma formulas (the model-based types read LCM's timesteps otherwise)."""
    if schedule != "automatic" and schedule not in a1111.SCHEDULES:
        raise UsageError(f"{what}: schedule type {schedule!r} is not one of A1111's: {', '.join(a1111.SCHEDULES)}")
    own = sampler in a1111_timesteps.SAMPLERS
    if schedule not in ("automatic", "uniform") and (own or (sampler == "lcm" and schedule in _MODEL_BASED)):
        takes = "Automatic" if own else "Automatic, Uniform and the sigma formulas"
        raise UsageError(f"{what}: A1111's {SAMPLERS[sampler].a1111} takes schedule type {takes}; not {schedule!r}")
    v = pipe.components.scheduler_config.get("prediction_type") == "v_prediction"
    if sampler == "lcm" and v:
        raise UsageError(f"{what}: A1111's LCM takes eps-prediction models, not v-prediction ones")


_MODEL_BASED = ("sgm_uniform", "normal", "simple", "ddim")


def check_options(sampler: str, options: dict) -> None:
    """eta, s_noise, s_churn, s_tmin, s_tmax where A1111's sampler takes them, as numbers >= 0; A1111's
    UniPC settings (uni_pc_variant, ...) for its UniPC."""
    takes = _params(_function(sampler))
    for k, v in options.items():
        if k in UNIPC_SETTINGS:
            if sampler != "unipc":
                raise UsageError(f"{k} is a setting of A1111's UniPC; not of {SAMPLERS[sampler].a1111}")
            check_setting(k, v)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise UsageError(f"{k} must be a number >= 0, got {str(v)[:40]!r}")
        if k not in takes:
            who = ", ".join(SAMPLERS[s].a1111 for s in A1111_PATH if k in _params(_function(s)))
            raise UsageError(f"on A1111's path {k} applies to the samplers {who}; not to {SAMPLERS[sampler].a1111}")


def _function(sampler: str):
    return (a1111_timesteps.SAMPLERS.get(sampler) or k_samplers.SAMPLERS[sampler])[0]


def _params(fn) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def region(src) -> tuple[Image.Image, Image.Image | None]:
    """(picture, A1111's image mask) a run from `src` starts from (workflows/a1111_masked.py)."""
    if src.mask is None:
        return src.image, None
    p = of_source(src)
    return p.image, p.mask


def image_seeds(request, seeds: list[int]) -> tuple[list[int], list[int] | None]:
    """(A1111 seeds, variation seeds) of a batch whose jobs have `seeds` (request.seed + k)."""
    pairs = [request.a1111.seeds(request.seed, s - request.seed) for s in seeds]
    subs = [v for _, v in pairs]
    return [s for s, _ in pairs], None if subs[0] is None else subs


def latents(pipe, cond, uncond, seeds: list[int], request, steps: int, size, cfg, start: dict) -> torch.Tensor:
    """The batch's latents by A1111's path (`cfg`: the loop's guidance scale; `start`: run_loop's
    image or init_latents (the hires pass) and strength)."""
    sampler, schedule = sampler_schedule(pipe, request.scheduler)
    config = pipe.components.scheduler_config
    f = pipe.scale_factor
    shape = (pipe.components.vae.config.latent_channels, size[1] // f, size[0] // f)
    a_seeds, subs = image_seeds(request, seeds)
    noise = ImageNoise(shape, a_seeds, subs, request.a1111.settings(f), pipe.device)
    src = request.source
    if src is not None and src.fill == "fill" and start.get("mask") is not None:
        start = {**start, "image": fill(start["image"], start["mask"])}
    run = a1111.A1111Run(sampler, schedule, steps, cfg, dict(request.sampler_options), **_init(pipe, start, seeds))
    run.refiner = start.get("refiner")  # A1111's refiner (refiner_switch): it takes over inside the sampler

    def plain_noise():  # A1111's create_random_tensors: each seed's first draw
        return torch.stack([generator(request.a1111.rng, s).randn(shape).cpu() for s in a_seeds])

    cond, uncond = _with_mask(pipe, run, start, request, shape, (cond, uncond), plain_noise, len(seeds))
    v = config.get("prediction_type", "epsilon") == "v_prediction"
    net = pipe.family.denoiser(pipe.components)
    acp = a1111.alphas_cumprod(config)
    if sampler in a1111_timesteps.SAMPLERS:
        return a1111_timesteps.sample(net, acp, run, noise, cond, uncond, v, request.callback)
    return a1111.sample(net, acp, run, noise, cond, uncond, v, pipe.family.name, request.callback)


def refiner_switch(pipe, conds) -> a1111.RefinerSwitch:
    """The SDXL refiner's switch for one run (its `took_over` says afterwards whether it decodes)."""
    r = pipe.refiner
    return a1111.RefinerSwitch(pipe.refiner_start, r.family.denoiser(r.components), *conds)


def _with_mask(pipe, run, start: dict, request, shape, contexts, noise, n: int):
    """Inpainting (workflows/a1111_inpaint.py): the blend into `run`, an inpainting UNet's channels
    into the contexts (without a mask it repaints everything, as A1111 conditions it)."""
    mask, image = start.get("mask"), start.get("image")  # mask: A1111's image mask (region())
    if mask is not None and run.init is not None:
        nmask = latent_mask(mask, shape[1:], run.init.device)
        run.init = masked_start(run.init, nmask, request.source.fill, noise)
        run.blend = Blend(run.init, nmask)
    if image is None or start.get("init_latents") is not None:  # txt2img, hires: a grey picture
        image = Image.new("RGB", (shape[2] * pipe.scale_factor, shape[1] * pipe.scale_factor), (128, 128, 128))
    everything = Image.new("L", image.size, 255)
    channels = inpaint_channels(pipe, image, everything if mask is None else mask, n)
    cond, uncond = contexts
    if channels is None:
        return cond, uncond
    return Inputs(cond, channels), None if uncond is None else Inputs(uncond, channels)


def _init(pipe, start: dict, seeds: list[int]) -> dict:
    """A1111Run's img2img fields: the hires pass's upscaled latents (A1111's fixed-steps rule) or the
    init image's latents, the VAE posterior's mean (A1111 draws a sample with its unseeded global RNG,
    so its own img2img images vary by that draw)."""
    init, image = start.get("init_latents"), start.get("image")
    if init is None and image is None:
        return {}
    if init is None:
        init = encode(pipe, [image]).repeat(len(seeds), 1, 1, 1)
    hires = start.get("image") is None
    return {"init": init, "strength": float(start.get("strength", 1.0)), "fixed": hires}


def encode(pipe, images: list[Image.Image]) -> torch.Tensor:
    """The pictures' latents as A1111 starts from them: the VAE posterior's mean (its sample's draw is
    unseeded there: see _init), scaled."""
    vae = pipe.components.vae
    with torch.no_grad():
        x = torch.cat([to_tensor(im) for im in images]).to(vae.device, vae.dtype)
        return vae.encode(x).latent_dist.mean.float() * vae.config.scaling_factor
