"""Text to image by ComfyUI's own KSampler path (sampling/comfy.py) when a call asks for ComfyUI's noise
and its sampler is one of ComfyUI's k-diffusion samplers: its checks, and the run of one batch (image k
is row k of one batch latent's noise). Other samplers keep diffusers' classes with ComfyUI's noise."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from latentdiff.errors import UsageError
from latentdiff.sampling import comfy
from latentdiff.sampling.comfy_samplers import CFG_PP
from latentdiff.sampling.model_call import ImageChannels, as_inputs
from latentdiff.sampling.noise import COMFY_DEVICES
from latentdiff.sampling.sampler_table import SAMPLERS
from latentdiff.sampling.schedulers import parse
from latentdiff.workflows import comfy_start

FAMILIES = ("sd", "sdxl")
# our schedule keys -> ComfyUI's scheduler names (those ComfyUI has; "automatic" is its "normal")
SCHEDULES = {"automatic": "normal", "uniform": "normal", "ddim": "ddim_uniform"}


def names(request) -> tuple[str, str] | None:
    """(ComfyUI sampler, ComfyUI scheduler) of the request's sampler choice, or None where its sampler
    is not one of ComfyUI's k-diffusion samplers (diffusers' classes run it)."""
    if request.noise not in COMFY_DEVICES:
        return None
    if request.comfy_run is not None:
        first = request.comfy_run.stages[0]
        return first.sampler, first.scheduler
    if request.scheduler is None:
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
    if request.comfy_run is not None:
        check_run(pipe, request)
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
    if comfy.SAMPLERS[chosen[0]][0] in CFG_PP and request.guidance == 1.0:
        raise UsageError(
            f"{what}: the CFG++ sampler {chosen[0]} needs a cfg other than 1 here (ComfyUI's CFG 1 is not run)"
        )
    if (pipe.refiner is not None and not refined(request)) or request.controls or request.image_prompts:
        raise UsageError(f"{what} runs text to image without a refiner, ControlNets or image prompts")


def refined(request) -> bool:
    """Whether the request's ComfyUI graph runs stages on a refiner (its second checkpoint)."""
    return request.comfy_run is not None and any(stage.refiner for stage in request.comfy_run.stages)


def check_run(pipe, request) -> None:
    """A graph's stages and picture: ComfyUI's noise, one image from a picture, a mask for an inpainting
    UNet, the refiner its later stages name, CFG wherever a stage guides."""
    run = request.comfy_run
    if request.noise not in COMFY_DEVICES:
        raise UsageError("a ComfyUI graph (comfy_graph) runs with ComfyUI's noise: noise 'comfy' or 'comfy_nv'")
    if pipe.family.inpainting(pipe.components) and run.mask is None:
        raise UsageError(
            "an inpainting UNet's ComfyUI graph runs here with a mask (InpaintModelConditioning, VAEEncodeForInpaint "
            "or SetLatentNoiseMask); this one has none"
        )
    if refined(request) and pipe.refiner is None:
        raise UsageError("the ComfyUI graph's later samplers run on a refiner checkpoint: load it (--refiner)")
    if request.guidance == 1.0 and any(stage.cfg != 1.0 for stage in run.stages):
        raise UsageError("a ComfyUI graph whose first sampler has cfg 1 runs its later ones at cfg 1 too")
    if run.image is None:
        return
    if (request.noise_batch or request.num_images) != 1:
        raise UsageError("a ComfyUI graph starting from a picture makes one image (its LoadImage is one picture)")


def latents(pipe, cond, uncond, steps: int, size, cfg: float, noise, chosen: tuple[str, str], callback=None, run=None, refiner_conds=None):  # fmt: skip
    """The batch's latents at `size` by ComfyUI's path (`noise`: its sampling.noise.ComfyNoise; `run`:
    a graph's stages and start, workflows/comfy_start.ComfyRun): each stage from the last one's latents,
    a refiner's stages on `pipe.refiner` with its prompts `refiner_conds`."""
    c = pipe.components
    stages = run.stages if run is not None else (comfy.Stage(*chosen, steps, cfg, noise.seed),)
    latent, mask, concat = comfy_start.start(c.vae, run, pipe.scale_factor) if run is not None else (None,) * 3
    f = pipe.scale_factor
    shape = (c.vae.config.latent_channels, size[1] // f, size[0] // f)
    if pipe.family.inpainting(c) and latent is not None:
        cond, uncond = _with_channels(pipe, (cond, uncond), concat or (mask, latent))
    mask = None if mask is None else comfy_start.noise_mask(mask, (len(noise.rows), *shape))
    models = {False: _model(pipe, cond, uncond)}
    if refiner_conds is not None:
        models[True] = _model(pipe.refiner, *refiner_conds)
    for stage in stages:
        net, s, cond, uncond = models[stage.refiner]
        drawn = replace(noise, seed=stage.seed)
        first = drawn.initial(shape) if stage.add_noise else torch.zeros((len(noise.rows), *shape))
        step_noise = comfy.StepNoise(stage.seed, noise.rows, noise.batch, noise.device)
        args = (net, s, stage.sampler, stage.sigmas(s), first.to(pipe.device), step_noise, cond, uncond, stage.cfg)
        latent = comfy.sample(*args, callback, latent, mask)
    return latent


def _with_channels(pipe, contexts, concat):
    """The prompts with an inpainting UNet's extra channels as ComfyUI's concat_cond makes them: the mask
    (1, 1, H, W) resized bilinearly to the latent and rounded, then the latent (1, C, h, w) beside it."""
    m, latent = concat
    small = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=latent.shape[2:], mode="bilinear").round()
    channels = ImageChannels(pipe.family.mask_channels(pipe.components, small.to(latent), latent))
    return tuple(None if x is None else replace(as_inputs(x), channels=channels) for x in contexts)


def _model(pipe, cond, uncond):
    """(denoiser, ComfyUI's model sampling, cond, uncond) of one checkpoint."""
    config = pipe.components.scheduler_config
    s = comfy.ComfyModelSampling(config, config.get("prediction_type", "epsilon") == "v_prediction")
    return pipe.family.denoiser(pipe.components), s, cond, uncond
