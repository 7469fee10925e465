"""Sigma lists of A1111 1.10's schedule types that no diffusers flag gives (its modules/sd_schedulers.py,
read for behaviour; our code): n steps -> n + 1 sigmas, highest first, for a scheduler's
`set_timesteps(sigmas=...)`. `model` is the model's own sigma per training timestep (k-diffusion's
CompVisDenoiser: sqrt((1 - alphas_cumprod) / alphas_cumprod)); fractional timesteps interpolate
log sigma linearly, as k-diffusion's t_to_sigma / sigma_to_t do."""

from __future__ import annotations

import numpy as np


def _t_to_sigma(t, model: np.ndarray):
    return np.exp(np.interp(t, np.arange(len(model)), np.log(model)))


def _sigma_to_t(sigma: float, model: np.ndarray) -> float:
    return float(np.interp(np.log(sigma), np.log(model), np.arange(len(model))))


def simple(n: int, model: np.ndarray) -> list[float]:
    """Every len/n-th model sigma from the highest (ComfyUI's and A1111's "Simple")."""
    step = len(model) / n
    return [float(model[-(1 + int(x * step))]) for x in range(n)] + [0.0]


def normal(n: int, model: np.ndarray) -> list[float]:
    """Timesteps evenly from the highest sigma's to the lowest's, both included ("Normal")."""
    ts = np.linspace(_sigma_to_t(model[-1], model), _sigma_to_t(model[0], model), n)
    return [float(s) for s in _t_to_sigma(ts, model)] + [0.0]


def ddim(n: int, model: np.ndarray) -> list[float]:
    """Every (len // n)-th model sigma from timestep 1, highest first (DDIM's uniform spacing)."""
    step = max(len(model) // n, 1)
    return [float(model[x]) for x in range(1, len(model), step)][::-1] + [0.0]


def kl_optimal(n: int, model: np.ndarray) -> list[float]:
    """tan of evenly spaced arctan sigmas (Sabour et al. 2024, "Align Your Steps" appendix), ending
    at the lowest sigma."""
    lo, hi = np.arctan(model[0]), np.arctan(model[-1])
    i = np.arange(n + 1) / n
    return [float(s) for s in np.tan(i * lo + (1 - i) * hi)]


def polyexponential(n: int, model: np.ndarray, rho: float = 1.0) -> list[float]:
    """log sigma along ramp**rho from the highest to the lowest (k-diffusion's polyexponential, A1111's
    default rho 1)."""
    ramp = np.linspace(1, 0, n) ** rho
    lo, hi = np.log(model[0]), np.log(model[-1])
    return [float(s) for s in np.exp(ramp * (hi - lo) + lo)] + [0.0]


FUNCTIONS = {
    "simple": simple,
    "normal": normal,
    "ddim": ddim,
    "kl_optimal": kl_optimal,
    "polyexponential": polyexponential,
}


def with_sigma_list(scheduler, schedule: str):
    """`scheduler` whose `set_timesteps(n)` sets schedule `schedule`'s n + 1 sigmas (the class must
    take `sigmas=`: EulerDiscreteScheduler)."""
    model = np.sqrt((1 - scheduler.alphas_cumprod.numpy()) / scheduler.alphas_cumprod.numpy())
    own = scheduler.set_timesteps

    def set_timesteps(num_inference_steps: int, device=None, **kwargs):
        own(sigmas=FUNCTIONS[schedule](num_inference_steps, model), device=device)

    scheduler.set_timesteps = set_timesteps
    return scheduler
