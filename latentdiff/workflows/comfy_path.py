"""Text to image by ComfyUI's own KSampler path (sampling/comfy.py) when a call asks for ComfyUI's noise
and its sampler is one of ComfyUI's k-diffusion samplers: its checks, and the run of one batch (image k
is row k of one batch latent's noise). Other samplers keep diffusers' classes with ComfyUI's noise."""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.sampling import comfy
from latentdiff.sampling.noise import COMFY_DEVICES
from latentdiff.sampling.sampler_table import SAMPLERS
from latentdiff.sampling.schedulers import parse

FAMILIES = ("sd", "sdxl")
# our schedule keys -> ComfyUI's scheduler names (those ComfyUI has; "automatic" is its "normal")
SCHEDULES = {"automatic": "normal", "uniform": "normal", "ddim": "ddim_uniform"}


def names(request) -> tuple[str, str] | None:
    """(ComfyUI sampler, ComfyUI scheduler) of the request's sampler choice, or None where its sampler
    is not one of ComfyUI's k-diffusion samplers (diffusers' classes run it)."""
    if request.noise not in COMFY_DEVICES or request.scheduler is None:
        return None
    sampler, schedule = parse(request.scheduler, a1111=True)
    own = [n for n in SAMPLERS[sampler].comfy if n in comfy.SAMPLERS]
    if not own:
        return None
    scheduler = SCHEDULES.get(schedule, schedule)
    if scheduler not in comfy.SCHEDULERS:
        raise UsageError(
            f"ComfyUI's KSampler has no scheduler {schedule!r}; choose one of {', '.join(comfy.SCHEDULERS)}"
        )
    return own[0], scheduler


def check(pipe, request) -> None:
    """One UsageError where ComfyUI's path cannot run this request (before any work)."""
    chosen = names(request)
    if chosen is None:
        if request.noise == "comfy_nv":
            raise UsageError(
                "noise 'comfy_nv' (ComfyUI's step noise on an NVIDIA GPU) runs on ComfyUI's own path: choose one of "
                f"its samplers ({', '.join(comfy.SAMPLERS)}) or noise 'comfy'"
            )
        return
    what = "ComfyUI's KSampler path (noise 'comfy' with a ComfyUI k-diffusion sampler)"
    if pipe.family.name not in FAMILIES:
        raise UsageError(f"{what} applies to SD 1.x/2.x and SDXL models, not {pipe.family.label}")
    if request.sampler_options:
        given = ", ".join(k for k, _ in request.sampler_options)
        raise UsageError(f"{what} takes no sampler options, as ComfyUI's KSampler node: drop {given}")
    if pipe.refiner is not None or request.controls or request.image_prompts:
        raise UsageError(f"{what} runs text to image without a refiner, ControlNets or image prompts")


def latents(pipe, cond, uncond, steps: int, size, cfg: float, noise, chosen: tuple[str, str], callback=None):
    """The batch's latents at `size` by ComfyUI's path (`noise`: its sampling.noise.ComfyNoise)."""
    c = pipe.components
    config = c.scheduler_config
    s = comfy.ComfyModelSampling(config, config.get("prediction_type", "epsilon") == "v_prediction")
    sampler, scheduler = chosen
    sigmas = comfy.ksampler_sigmas(s, sampler, scheduler, steps)
    f = pipe.scale_factor
    first = noise.initial((c.vae.config.latent_channels, size[1] // f, size[0] // f)).to(pipe.device)
    step_noise = comfy.StepNoise(noise.seed, noise.rows, noise.batch, noise.device)
    return comfy.sample(pipe.family.denoiser(c), s, sampler, sigmas, first, step_noise, cond, uncond, cfg, callback)
