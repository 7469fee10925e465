"""A1111's sigma schedules (its schedule types, modules/sd_schedulers.py, read for behaviour; our code):
n steps -> n + 1 sigmas from the model's discrete sigmas (a1111.DiscreteDenoiser or any object with its
`sigmas`, `sigma_to_t` and `t_to_sigma`), and the list a sampler runs with."""

from __future__ import annotations

import math

import numpy as np
import torch

from latentdiff.sampling import k_samplers
from latentdiff.sampling.k_restart import karras
from latentdiff.sampling.sampler_table import SAMPLERS


# ---- sigma schedules (A1111's schedule types): n steps -> n + 1 sigmas -------------------------
def _exponential(n, lo, hi):
    return torch.linspace(math.log(hi), math.log(lo), n).exp()


def _polyexponential(n, lo, hi, rho=1.0):
    ramp = torch.linspace(1, 0, n) ** rho
    return torch.exp(ramp * (math.log(hi) - math.log(lo)) + math.log(lo))


def _kl_optimal(n, lo, hi):
    i = torch.arange(n + 1)
    return torch.tan(i / n * torch.arctan(torch.tensor(lo)) + (1.0 - i / n) * torch.arctan(torch.tensor(hi)))


def _beta(n, lo, hi, a=0.6, b=0.6):
    from scipy import stats

    return torch.FloatTensor([lo + x * (hi - lo) for x in stats.beta.ppf(1 - np.linspace(0, 1, n), a, b)])


_AYS = {  # Align Your Steps (Sabour et al. 2024), NVIDIA's published 10-step sigmas
    "sd1": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def _align_your_steps(n, family):
    sigmas = _AYS["sdxl" if family == "sdxl" else "sd1"]
    if n == len(sigmas):
        return torch.FloatTensor([*sigmas, 0.0])
    ys = np.exp(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(sigmas)), np.log(sigmas[::-1])))[::-1]
    return torch.FloatTensor([*ys.copy(), 0.0])


def _timesteps(model, ts) -> torch.Tensor:
    return torch.FloatTensor([float(model.t_to_sigma(t)) for t in ts] + [0.0])


def _from_model(schedule: str, n: int, model) -> torch.Tensor:
    s = model.sigmas
    first, last = model.sigma_to_t(s[-1]), model.sigma_to_t(s[0])
    if schedule == "uniform":  # the model's own: timesteps evenly from the last to 0
        return torch.cat([model.t_to_sigma(torch.linspace(len(s) - 1, 0, n)), s.new_zeros(1)])
    if schedule == "sgm_uniform":
        return _timesteps(model, torch.linspace(first, last, n + 1)[:-1])
    if schedule == "normal":
        return _timesteps(model, torch.linspace(first, last, n))
    if schedule == "simple":
        return torch.FloatTensor([float(s[-(1 + int(x * len(s) / n))]) for x in range(n)] + [0.0])
    step = max(len(s) // n, 1)  # ddim
    return torch.FloatTensor([float(s[x]) for x in range(1, len(s), step)][::-1] + [0.0])


_FORMULAS = {"karras": karras, "exponential": _exponential, "polyexponential": _polyexponential}


def sigmas_for(schedule: str, n: int, model, family: str = "sd1") -> torch.Tensor:
    """A1111's sigmas of `schedule` (our key; "automatic" already resolved) for n steps."""
    lo, hi = float(model.sigmas[0]), float(model.sigmas[-1])
    if schedule in _FORMULAS:
        return torch.cat([_FORMULAS[schedule](n, lo, hi), torch.zeros(1)])
    if schedule == "kl_optimal":
        return _kl_optimal(n, lo, hi)
    if schedule == "beta":
        return torch.cat([_beta(n, lo, hi), torch.zeros(1)])
    if schedule == "align_your_steps":
        return _align_your_steps(n, family)
    return _from_model(schedule, n, model)


SCHEDULES = ("uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal")
SCHEDULES += ("align_your_steps", "simple", "normal", "ddim", "beta")


def a1111_sigmas(sampler: str, schedule: str, steps: int, model, family="sd1") -> torch.Tensor:
    """The sigma list A1111 samples `sampler` with: Automatic is the sampler's default schedule or the
    model's own (uniform); DPM2, DPM2 a and DPM++ 3M SDE drop the penultimate sigma (one step more)."""
    if schedule == "automatic":
        schedule = SAMPLERS[sampler].automatic or "uniform"
    discard = k_samplers.SAMPLERS[sampler][2]
    sigmas = sigmas_for(schedule, steps + int(discard), model, family)
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas
