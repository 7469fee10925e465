"""The denoising loop over diffusers schedulers (their names and settings: schedulers.py).

One loop serves every scheduler: diffusers' `set_timesteps` / `scale_model_input` / `step`
carry each method's numerics (Song et al. DDIM, Ho et al. DDPM, Karras et al. Euler/Heun,
Lu et al. DPM-Solver++, Zhao et al. UniPC), so our outputs match theirs exactly.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch

from latentdiff.sampling.model_call import Denoiser, guided
from latentdiff.sampling.schedulers import SCHEDULERS, check_scheduler_name, make_scheduler  # noqa: F401 (re-exported)


def _accepts_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


def seed_per_image(scheduler, generators: list[torch.Generator], batch: int) -> None:
    """Image k depends only on seed + k, also where a scheduler draws its noise from a seed of its own
    rather than from the generators given to `step` (DPMSolverSDEScheduler: a Brownian tree per row
    when its `noise_sampler_seed` is a list): row k's tree is seeded with image k's seed. One
    generator for a larger batch (ComfyUI's noise, sampling/noise.py) seeds one tree for all rows."""
    if hasattr(scheduler, "noise_sampler_seed"):
        seeds = [g.initial_seed() for g in generators]
        scheduler.noise_sampler_seed = seeds[0] if len(seeds) == 1 < batch else seeds
        scheduler.noise_sampler = None


@torch.no_grad()
def denoise(
    model: Denoiser,
    scheduler,
    latents: torch.Tensor,  # (B, C, h, w) initial noise (scaled by init_noise_sigma), or a noised init latent
    cond,  # Inputs (or a plain context) of the prompts
    uncond,  # the same for the negatives; None when guidance == 1
    guidance: float,
    generators: list[torch.Generator],
    progress: Callable[[Iterable], Iterable] = iter,
    start: int = 0,
    end: int | None = None,
    blend: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Classifier-free guided sampling (Ho & Salimans 2022): eps = eps_u + g * (eps_c - eps_u).

    `model` is any Denoiser (sampling/model_call.py): `model(x, t, inputs)`. The unconditional
    and conditional halves go through it as one batch; at g == 1 (or without negatives) only the
    conditional half runs. Workflows that start from an image enter here too: `start` skips the
    first timesteps (SDEdit, Meng et al. 2021: the latents are an init image noised to timestep
    `start`), their image channels travel in the Inputs (a StepContexts context counts this run's
    steps from 0), and `blend(latents, i)` runs after step
    i (inpainting with an ordinary model pastes the re-noised known region back). `end` stops
    early, so one model can hand its latents to another mid-way (SDXL's refiner).
    `callback(step, total, latents)` runs after each step; it may raise (e.g. `errors.Cancelled`)
    to stop the loop there.

    No host sync per step (on a GPU the host queues steps ahead of the device): the scheduler's
    timesteps and sigmas stay on the CPU (callers set them without a device), so its per-step
    indexing and comparisons read host values; the model gets the timesteps copied to its device
    once per run. (diffusers' own per-step syncs remain in a few schedulers: the ancestral ones
    copy CPU-generated noise to the device, UniPC builds a small tensor on it.)
    """
    use_cfg = uncond is not None and guidance != 1.0
    dtype = model.dtype  # diffusers computes a module's dtype by walking every submodule: once per call, not per step
    inputs = guided(cond, uncond if use_cfg else None).to(dtype)
    seed_per_image(scheduler, generators, len(latents))
    step_kwargs = {"generator": generators} if _accepts_generator(scheduler) else {}
    step_kwargs.update(getattr(scheduler, "step_options", {}))
    scale = getattr(scheduler, "scale_model_input", None)
    timesteps = scheduler.timesteps[start:end]
    model_timesteps = timesteps.to(latents.device)
    total = len(timesteps)
    rescale = getattr(model, "rescale", None)  # a model's correction of its guided prediction (Qwen-Image, Z-Image)
    for i, t in enumerate(progress(timesteps)):
        x = inputs.rows(latents)  # CFG: the unconditional rows, then the conditional
        if scale is not None:  # flow-matching schedulers take the latents as they are
            x = scale(x, t)
        # Latents and scheduler arithmetic stay fp32; only the model runs in low precision.
        eps = inputs.guide(model(x.to(dtype), model_timesteps[i], inputs.at(i)).float(), guidance, rescale, t)
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        if blend is not None:
            latents = blend(latents, i)
        if callback is not None:
            callback(i + 1, total, latents)
    return latents


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """`latents` noised to `timesteps`: the scheduler's `add_noise` (DDPM-style), or for a
    flow-matching one its `scale_noise` (the straight line from the latents to the noise)."""
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(latents, noise, timesteps)
    return scheduler.scale_noise(latents, timesteps, noise)


def start_step(scheduler, steps: int, strength: float, denoised: int | None = None) -> int:
    """Index into `scheduler.timesteps` where a run of strength `strength` starts, as diffusers'
    img2img computes it (int(steps * strength) steps are denoised, at least one), or where
    `denoised` steps are left (a family that counts them otherwise: Family.strength_steps)."""
    if denoised is None:
        denoised = max(1, min(int(steps * strength), steps))
    start = (steps - denoised) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return start


def _cutoff(scheduler, fraction: float) -> int:
    n = scheduler.config.num_train_timesteps
    return int(round(n - fraction * n))


def steps_before(scheduler, fraction: float) -> int:
    """How many of the set timesteps come before `fraction` of the denoising (diffusers'
    `denoising_end`)."""
    return int((scheduler.timesteps >= _cutoff(scheduler, fraction)).sum())


def refiner_start_index(scheduler, fraction: float) -> int:
    """The timestep index where a second model takes over (diffusers' `denoising_start`); a
    second-order scheduler never starts between its two evaluations of one step."""
    n = int((scheduler.timesteps < _cutoff(scheduler, fraction)).sum())
    if scheduler.order == 2 and n % 2 == 0:
        n += 1
    start = len(scheduler.timesteps) - n
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return start


def initial_noise(shape: tuple[int, ...], seeds: list[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Image k's noise comes from its own CPU generator seeded s + k, as diffusers does with a
    list of generators, so an image does not depend on the batch it was made in."""
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return draw_noise(shape, gens), gens


def draw_noise(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    """(B, *shape) fp32 CPU noise, row k from generator k."""
    return torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators])
