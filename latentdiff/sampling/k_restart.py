"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes",
https://arxiv.org/abs/2306.14878) as A1111 1.10 runs its "Restart" sampler: Heun steps on a Karras
schedule; from 20 steps on, some of the steps are spent going back up from sigma ~0.1 to ~2 with
fresh noise and down again on a Karras schedule of their own (9 steps once, or a quarter of the steps
twice from 36 steps), so the whole run still costs `steps` Heun steps. Our code, from the paper and
A1111's documented settings; same signature as k_samplers.py's samplers.
"""

from __future__ import annotations

import torch


def karras(n: int, lo: float, hi: float, rho: float = 7.0) -> torch.Tensor:
    """n sigmas from `hi` down to `lo`, evenly spaced in sigma^(1/rho) (Karras et al. 2022, eq. 5)."""
    ramp = torch.linspace(0, 1, n)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def _nearest(sigmas: torch.Tensor, value: float) -> int:
    return int(torch.argmin((sigmas - value).abs(), dim=0))


def plan(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, next sigma) pairs Restart steps through for the schedule `sigmas` (n + 1, ending 0)."""
    steps = len(sigmas) - 1
    restarts = {}
    if steps >= 20:
        n, times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = torch.cat([karras(steps - n * times, sigmas[-2].item(), sigmas[0].item()), sigmas.new_zeros(1)])
        restarts = {_nearest(sigmas, 0.1): (n + 1, times, _nearest(sigmas, 2.0))}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restarts and restarts[i + 1][2] < i + 1:
            n, times, top = restarts[i + 1]
            back = karras(n, sigmas[i + 1].item(), sigmas[top].item())
            pairs += list(zip(back[:-1], back[1:])) * times
    return pairs


def _heun_step(model, x, sigma, sigma_next):
    """One Heun step from sigma to sigma_next (Euler onto 0)."""
    d = (x - model(x, sigma)) / sigma
    dt = sigma_next - sigma
    if sigma_next == 0:
        return x + d * dt
    x_2 = x + d * dt
    d_2 = (x_2 - model(x_2, sigma_next)) / sigma_next
    return x + (d + d_2) / 2 * dt


def restart(model, x, sigmas, noise, s_noise=1.0):
    """Heun steps through plan(sigmas); where the next step starts above where the last one ended, the
    noise that takes the image back up to that sigma is added first."""
    last = None
    for sigma, sigma_next in plan(sigmas):
        if last is not None and last < sigma:
            x = x + noise(sigma, sigma_next) * s_noise * (sigma**2 - last**2) ** 0.5
        x = _heun_step(model, x, sigma, sigma_next)
        last = sigma_next
    return x
