"""DPM-Solver (Lu et al. 2022, https://arxiv.org/abs/2206.00927) in log-sigma time t = -log(sigma), as
k-diffusion writes it and A1111 runs it as "DPM fast" (fixed steps, orders 3, ..., 3, 2, 1 spending
`n` model calls) and "DPM adaptive" (embedded 2/3 pairs with a PID step-size controller). Same
signature as k_samplers.py's samplers plus `bounds` = (sigma_min, sigma_max): A1111 hands these solvers
the model's sigma range in txt2img and the schedule's (its last non-zero and first sigma) in img2img.
Our code, the same arithmetic in the same order as k-diffusion (MIT), so the tests can hold it to it.
"""

from __future__ import annotations

import math

import torch


def _sigma(t):
    return t.neg().exp()


def _t(sigma):
    return -sigma.log()


class _Eps:
    """The model's noise prediction at log-sigma t, each key computed once per step."""

    def __init__(self, model):
        self.model, self.cache = model, {}

    def __call__(self, key, x, t):
        if key not in self.cache:
            self.cache[key] = (x - self.model(x, _sigma(t))) / _sigma(t)
        return self.cache[key]


def _step1(eps, x, t, t_next):
    """First order (DDIM's step)."""
    return x - _sigma(t_next) * (t_next - t).expm1() * eps("eps", x, t)


def _step2(eps, x, t, t_next, r1=1 / 2):
    """Second order through t + r1 h."""
    h = t_next - t
    e = eps("eps", x, t)
    s1 = t + r1 * h
    e1 = eps("eps_r1", x - _sigma(s1) * (r1 * h).expm1() * e, s1)
    return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / (2 * r1) * h.expm1() * (e1 - e)


def _step3(eps, x, t, t_next, r1=1 / 3, r2=2 / 3):
    """Third order through t + r1 h and t + r2 h."""
    h = t_next - t
    e = eps("eps", x, t)
    s1, s2 = t + r1 * h, t + r2 * h
    e1 = eps("eps_r1", x - _sigma(s1) * (r1 * h).expm1() * e, s1)
    u2 = x - _sigma(s2) * (r2 * h).expm1() * e - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (e1 - e)
    e2 = eps("eps_r2", u2, s2)
    return x - _sigma(t_next) * h.expm1() * e - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (e2 - e)


def _ancestral(t, t_next, t_end, eta):
    """(where the deterministic step goes, the noise that brings it back to t_next) in log-sigma time."""
    if not eta:
        return t_next, 0.0
    s, s_next = _sigma(t), _sigma(t_next)
    up = torch.minimum(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5)
    down = torch.minimum(t_end, _t((s_next**2 - up**2) ** 0.5))
    return down, (s_next**2 - _sigma(down) ** 2) ** 0.5


def dpm_fast(model, x, sigmas, noise, bounds, eta=1.0, s_noise=1.0):
    """DPM-Solver-fast: len(sigmas) - 1 model calls on uniform log-sigma steps between the bounds."""
    nfe = len(sigmas) - 1
    t_start, t_end = _t(torch.tensor(bounds[1])), _t(torch.tensor(bounds[0]))
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        down, up = _ancestral(t, t_next, t_end, eta)
        x = (_step1, _step2, _step3)[order - 1](_Eps(model), x, t, down)
        x = x + up * s_noise * noise(_sigma(t), _sigma(t_next))
    return x


class _PID:
    """k-diffusion's PID step-size controller (integral only by default), limiter 1 + atan(x - 1)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h, self.safety, self.eps, self.errs = h, accept_safety, eps, []
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)

    def accept(self, error) -> bool:
        inv = 1 / (float(error) + self.eps)
        self.errs = self.errs or [inv] * 3
        self.errs[0] = inv
        factor = 1 + math.atan(self.errs[0] ** self.b[0] * self.errs[1] ** self.b[1] * self.errs[2] ** self.b[2] - 1)
        if factor >= self.safety:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return factor >= self.safety


def dpm_adaptive(model, x, sigmas, noise, bounds, eta=1.0, s_noise=1.0, order=3, rtol=0.05, atol=0.0078, h_init=0.05):
    """DPM-Solver-23 with adaptive steps: each step's second- and third-order results compared, the step
    accepted where their scaled difference is small; the number of model calls follows the error."""
    t_end = _t(torch.tensor(bounds[0]))
    s = _t(torch.tensor(bounds[1]))
    pid = _PID(abs(h_init), 0.0, 1.0, 0.0, 1.5 if eta else order, 0.81)
    atol, rtol, x_prev = torch.tensor(atol), torch.tensor(rtol), x
    while s < t_end - 1e-5:
        t = torch.minimum(t_end, s + pid.h)
        down, up = _ancestral(s, t, t_end, eta)
        eps = _Eps(model)
        low_step, high_step = (_step1, _step2) if order == 2 else (lambda *a: _step2(*a, r1=1 / 3), _step3)
        x_low, x_high = low_step(eps, x, s, down), high_step(eps, x, s, down)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        if pid.accept(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5):
            x_prev = x_low
            x = x_high + up * s_noise * noise(_sigma(s), _sigma(t))
            s = t
    return x
