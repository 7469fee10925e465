"""The denoising loop over diffusers schedulers, and scheduler names.

One loop serves every scheduler: diffusers' `set_timesteps` / `scale_model_input` / `step`
carry each method's numerics (Song et al. DDIM, Ho et al. DDPM, Karras et al. Euler/Heun,
Lu et al. DPM-Solver++, Zhao et al. UniPC), so our outputs match theirs exactly.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch

from .errors import UsageError

# name -> (diffusers class, config overrides)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpm++2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def check_scheduler_name(name: str) -> str:
    key = name.strip().lower()
    if key not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return key


def make_scheduler(config: dict, name: str | None = None):
    """A fresh scheduler: the model's own config, optionally switched to another method."""
    import diffusers

    if name is None:
        cls_name, overrides = config.get("_class_name", "PNDMScheduler"), {}
    else:
        cls_name, overrides = SCHEDULERS[check_scheduler_name(name)]
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise UsageError(f"the model's scheduler class {cls_name!r} is not available in diffusers")
    return cls.from_config({**config, **overrides})


def _accepts_generator(scheduler) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


@torch.no_grad()
def denoise(
    unet,
    scheduler,
    latents: torch.Tensor,  # (B, C, h, w) initial noise, already scaled by init_noise_sigma
    cond: torch.Tensor,  # (B, T, D) prompt embeddings
    uncond: torch.Tensor | None,  # (B, T, D) negative embeddings, None when guidance == 1
    guidance: float,
    generators: list[torch.Generator],
    progress: Callable[[Iterable], Iterable] = iter,
) -> torch.Tensor:
    """Classifier-free guided sampling (Ho & Salimans 2022): eps = eps_u + g * (eps_c - eps_u).

    The unconditional and conditional halves go through the UNet as one batch; at g == 1
    (or without negatives) only the conditional half runs.
    """
    use_cfg = uncond is not None and guidance != 1.0
    dtype = unet.dtype  # diffusers computes this by walking every submodule: once per call, not per step
    context = (torch.cat([uncond, cond]) if use_cfg else cond).to(dtype)
    step_kwargs = {"generator": generators} if _accepts_generator(scheduler) else {}
    for t in progress(scheduler.timesteps):
        x = torch.cat([latents, latents]) if use_cfg else latents
        x = scheduler.scale_model_input(x, t).to(dtype)
        # Latents and scheduler arithmetic stay fp32; only the UNet runs in low precision.
        eps = unet(x, t, encoder_hidden_states=context).sample.float()
        if use_cfg:
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
    return latents


def initial_noise(shape: tuple[int, ...], seeds: list[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Image k's noise comes from its own CPU generator seeded s + k, as diffusers does with a
    list of generators, so an image does not depend on the batch it was made in."""
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in gens])
    return noise, gens
