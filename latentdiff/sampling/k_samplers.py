"""Samplers over a denoiser in sigma space, as k-diffusion (Crowson, MIT) writes them and A1111 calls
them: `sample(model, x, sigmas, noise, **options) -> x`, where `model(x, sigma) -> denoised` (the
guided x0 prediction), `sigmas` (n + 1,) fall to 0, and `noise(sigma, sigma_next) -> (B, C, h, w)` gives
a step's fresh noise (A1111: its per-image generators, or Brownian trees for the SDE samplers).

Our code, the same arithmetic in the same order (float32 tensors as k-diffusion keeps them), so that
tests/sampling/test_a1111_path.py can hold each against k-diffusion's own `sample_*` within 1/255.
"""

from __future__ import annotations

from typing import Callable

import torch
from scipy import integrate

from latentdiff.sampling.k_dpm_solver import dpm_adaptive, dpm_fast
from latentdiff.sampling.k_restart import restart

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def derivative(x, sigma, denoised):
    """dx/dsigma of the probability-flow ODE (Karras et al. 2022, eq. 3 with sigma(t) = t)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """(sigma_down, sigma_up): where a deterministic step goes, and how much fresh noise brings it back
    to sigma_to (eta = 1: the DDPM posterior's variance)."""
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


def _churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s Algorithm 2 "churn": raise sigma_i by gamma, adding the noise that takes."""
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
    sigma_hat = sigmas[i] * (gamma + 1)
    if s_churn:  # k-diffusion draws each step while churning, used or not
        eps = noise(sigmas[i], sigmas[i + 1]) * s_noise
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def euler(model, x, sigmas, noise, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler steps (Karras et al. 2022, Algorithm 2 without its second-order correction)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise)
        x = x + derivative(x, sigma_hat, model(x, sigma_hat)) * (sigmas[i + 1] - sigma_hat)
    return x


def euler_ancestral(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """Euler steps down to sigma_down, then fresh noise up to the next sigma."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + derivative(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def heun(model, x, sigmas, noise, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's second-order steps, Euler on the last (Karras et al. 2022, Algorithm 2)."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise)
        d = derivative(x, sigma_hat, model(x, sigma_hat))
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = derivative(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
        x = x + (d + d_2) / 2 * dt
    return x


def _midpoint(model, x, d, sigma, target):
    """DPM-Solver-2's step from sigma to target through their geometric midpoint."""
    mid = sigma.log().lerp(target.log(), 0.5).exp()
    x_2 = x + d * (mid - sigma)
    return x + derivative(x_2, mid, model(x_2, mid)) * (target - sigma)


def dpm_2(model, x, sigmas, noise, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM-Solver-2 steps (Lu et al. 2022) in Karras et al.'s form; Euler on the last."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, noise, s_churn, s_tmin, s_tmax, s_noise)
        d = derivative(x, sigma_hat, model(x, sigma_hat))
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = _midpoint(model, x, d, sigma_hat, sigmas[i + 1])
    return x


def dpm_2_ancestral(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver-2 steps down to sigma_down, then fresh noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = derivative(x, sigmas[i], denoised)
        if down == 0:
            x = x + d * (down - sigmas[i])
        else:
            x = _midpoint(model, x, d, sigmas[i], down)
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def _lms_coefficient(order, t, i, j):
    """The integral over [t_i, t_i+1] of the Lagrange basis polynomial of point i - j."""

    def basis(tau):
        out = 1.0
        for k in range(order):
            if k != j:
                out *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return out

    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


def lms(model, x, sigmas, noise, order=4):
    """Linear multistep (Adams-Bashforth) in sigma over the last `order` derivatives."""
    points = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        ds = [*ds, derivative(x, sigmas[i], model(x, sigmas[i]))][-order:]
        n = min(i + 1, order)
        x = x + sum(_lms_coefficient(n, points, i, j) * d for j, d in enumerate(reversed(ds)))
    return x


def _t(sigma):
    return sigma.log().neg()


def _sigma(t):
    return t.neg().exp()


def dpmpp_2s_ancestral(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) (Lu et al. 2022b) single steps down to sigma_down, then fresh noise."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if down == 0:
            x = x + derivative(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * model(x_2, _sigma(s))
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def dpmpp_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0, r=0.5):
    """DPM-Solver++ stochastic, two stages per step (the second at t + r h); Euler on the last."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + derivative(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        down, up = ancestral_step(_sigma(t), _sigma(s), eta)
        s_ = _t(down)
        x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise(_sigma(t), _sigma(s)) * s_noise * up
        denoised_2 = model(x_2, _sigma(s))
        down, up = ancestral_step(_sigma(t), _sigma(t_next), eta)
        t_next_ = _t(down)
        fac = 1 / (2 * r)
        mixed = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * mixed
        x = x + noise(_sigma(t), _sigma(t_next)) * s_noise * up
    return x


def dpmpp_2m(model, x, sigmas, noise):
    """DPM-Solver++(2M) (Lu et al. 2022b): second order from the previous step's denoised."""
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        mixed = denoised
        if old is not None and sigmas[i + 1] != 0:
            r = (t - _t(sigmas[i - 1])) / h
            mixed = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * mixed
        old = denoised
    return x


def _sde_noise(noise, sigmas, i, eta_h, s_noise):
    """The fresh noise of an SDE step from sigma_i to sigma_i+1: sigma_i+1 sqrt(1 - exp(-2 eta h))."""
    return noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise


def dpmpp_2m_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE, its second-order term by the midpoint or Heun rule."""
    old, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = eta * h
            decay = (-h - eta_h).expm1().neg()
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + decay * denoised
            if old is not None:
                diff = (1 / (h_last / h)) * (denoised - old)
                x = x + (decay / (-h - eta_h) + 1) * diff if solver_type == "heun" else x + 0.5 * decay * diff
            if eta:
                x = x + _sde_noise(noise, sigmas, i, eta * h, s_noise)
        old, h_last = denoised, h
    return x


def dpmpp_3m_sde(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE: third order from the two previous denoised."""
    d_1, d_2, h_1, h_2 = None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                a, b = (denoised - d_1) / r0, (d_1 - d_2) / r1
                x = x + phi_2 * (a + (a - b) * r0 / (r0 + r1)) - (phi_2 / h_eta - 0.5) * ((a - b) / (r0 + r1))
            elif h_1 is not None:
                x = x + phi_2 * ((denoised - d_1) / (h_1 / h))
            if eta:
                x = x + _sde_noise(noise, sigmas, i, h * eta, s_noise)
        d_1, d_2, h_1, h_2 = denoised, d_1, h, h_1
    return x


def lcm(model, x, sigmas, noise):
    """Latent consistency sampling (Luo et al. 2023): the consistency model's x0, re-noised to each next sigma."""
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise(sigmas[i], sigmas[i + 1])
    return x


# A1111 1.10's k-diffusion samplers (modules/sd_samplers_kdiffusion.py): our key -> (function, fixed
# options, whether A1111 discards the penultimate sigma, whether its noise comes from Brownian trees).
SAMPLERS = {
    "euler": (euler, {}, False, False),
    "euler_a": (euler_ancestral, {}, False, False),
    "heun": (heun, {}, False, False),
    "lms": (lms, {}, False, False),
    "dpm2": (dpm_2, {}, True, False),
    "dpm2_a": (dpm_2_ancestral, {}, True, False),
    "dpm++2s_a": (dpmpp_2s_ancestral, {}, False, False),
    "dpm++2m": (dpmpp_2m, {}, False, False),
    "dpm++sde": (dpmpp_sde, {}, False, True),
    "dpm++2m_sde": (dpmpp_2m_sde, {}, False, True),
    "dpm++2m_sde_heun": (dpmpp_2m_sde, {"solver_type": "heun"}, False, True),
    "dpm++3m_sde": (dpmpp_3m_sde, {}, True, True),
    "dpm_fast": (dpm_fast, {}, False, False),
    "dpm_adaptive": (dpm_adaptive, {}, False, False),
    "restart": (restart, {}, False, False),
    "lcm": (lcm, {}, False, False),  # with a1111.LCMDenoiser
}
