"""More of ComfyUI's own samplers (its comfy/k_diffusion/sampling.py, read for behaviour, GPL-3.0; our
code, the same arithmetic in the same order), in k_samplers.py's signature
`sample(model, x, sigmas, noise, **options) -> x` for an eps- or v-prediction model's sigmas:

- Heun++ 2 (ComfyUI's heunpp2, after Carzit's sd-webui-samplers-scheduler): Euler on the last step,
  Heun before it, else a third evaluation one step further, the derivatives weighted by the sigmas
  over 2 or 3 times the first sigma.
- Gradient estimation (Permenter & Yuan 2024, "Interpreting and improving diffusion models from an
  optimization perspective"): Euler plus (gamma - 1) times the change of the derivative, gamma 2;
  its CFG++ form steps along the unconditional prediction.
- SEEDS-2 and SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267): stochastic explicit exponential
  derivative-free solvers over the data prediction in lambda = -log sigma, two or three stages at
  fractions r of the step, each stage's noise carried into the next (eta 1).
- DDPM and LCM as ComfyUI steps them: the ancestral DDPM posterior on the variance-preserving latent;
  the prediction noised afresh to the next sigma.
- DPM fast / DPM adaptive: k_dpm_solver.py's, as ComfyUI calls k-diffusion's: eta 0 (A1111 passes its
  ancestral eta 1), between the schedule's last non-zero sigma and its first (sampling/comfy.py).
"""

from __future__ import annotations

import torch

from latentdiff.sampling.k_dpm_solver import dpm_adaptive, dpm_fast
from latentdiff.sampling.k_samplers import derivative


def half_log_snr(sigma):
    """lambda = log(alpha / sigma) of an eps/v model's sigma (alpha 1 in k-diffusion's scaling)."""
    return sigma.log().neg()


def heunpp2(model, x, sigmas, noise):
    """Heun++ 2: up to three derivatives per step, weighted toward the current one as sigma falls."""
    end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        d = derivative(x, sigmas[i], model(x, sigmas[i]))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = derivative(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
        if sigmas[i + 2] == end:
            w_2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
        d_3 = derivative(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
        w_2, w_3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
        x = x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt
    return x


def gradient_estimation(model, x, sigmas, noise, gamma=2.0, cfg_pp=False):
    """Euler steps corrected by (gamma - 1) (d - d_prev) dt; the prediction itself on the last step."""
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = derivative(x, sigmas[i], model.uncond_denoised if cfg_pp else denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if old is not None:
                x = x + (gamma - 1) * (d - old) * dt
        old = d
    return x


class _Seeds:
    """One SEEDS step from sigma `s` to `t`: the stage points at fractions r of the step in lambda, and
    the noise each stage carries on (its part decays with e^((r_prev - r) h eta))."""

    def __init__(self, x, s, t, noise, eta, s_noise):
        self.x, self.s, self.noise, self.eta, self.s_noise = x, s, noise, eta, s_noise
        self.t, self.ls, self.lt = t, half_log_snr(s), half_log_snr(t)
        self.h = self.lt - self.ls
        self.h_eta = self.h * (eta + 1)
        self.carried, self.at, self.r = None, s, 0.0

    def point(self, r):
        """(sigma, alpha) at fraction r < 1 of the step."""
        lam = torch.lerp(self.ls, self.lt, r)
        sigma = lam.neg().exp()
        return sigma, sigma * lam.exp()

    def end(self, mix):
        """The step's result from `mix` (phi-weighted predictions)."""
        return self.state(1.0, self.t, self.t * self.lt.exp(), mix)

    def state(self, r, sigma, alpha, mix):
        """The stage's state at fraction r: the exponential integrator of `mix` (already phi-weighted)."""
        out = sigma / self.s * (-r * self.h * self.eta).exp() * self.x - alpha * mix
        if self.eta > 0 and self.s_noise > 0:
            segment = (self.r - r) * self.h * self.eta
            fresh = segment.mul(2).expm1().neg().sqrt() * self.noise(self.at, sigma)
            self.carried = fresh if self.carried is None else self.carried * segment.exp() + fresh
            out = out + self.carried * sigma * self.s_noise
        self.at, self.r = sigma, r
        return out


def _phi_1(h):
    return torch.expm1(h)


def _phi_2(h):
    return (torch.expm1(h) - h) / h


def _seeds(model, x, sigmas, noise, eta, s_noise, r_1, rest):
    """The SEEDS loop: the prediction itself on the last step, else a first stage at r_1 and
    `rest(step, denoised, denoised_2)` for the step's result."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        step = _Seeds(x, sigmas[i], sigmas[i + 1], noise, eta, s_noise)
        sigma_1, alpha_1 = step.point(r_1)
        x_2 = step.state(r_1, sigma_1, alpha_1, _phi_1(-r_1 * step.h_eta) * denoised)
        x = rest(step, denoised, model(x_2, sigma_1))
    return x


def seeds_2(model, x, sigmas, noise, eta=1.0, s_noise=1.0, r=0.5):
    """SEEDS-2: a midpoint stage at r, then the step with the predictions mixed by 1 / (2 r)."""

    def rest(step, denoised, denoised_2):
        return step.end(_phi_1(-step.h_eta) * torch.lerp(denoised, denoised_2, 1 / (2 * r)))

    return _seeds(model, x, sigmas, noise, eta, s_noise, r, rest)


def seeds_3(model, x, sigmas, noise, eta=1.0, s_noise=1.0, r_1=1.0 / 3, r_2=2.0 / 3):
    """SEEDS-3: stages at r_1 and r_2, the third-order exponential combination of their predictions."""

    def rest(step, denoised, denoised_2):
        sigma_2, alpha_2 = step.point(r_2)
        a_2 = r_2 / r_1 * _phi_2(-r_2 * step.h_eta)
        a_1 = _phi_1(-r_2 * step.h_eta) - a_2
        denoised_3 = model(step.state(r_2, sigma_2, alpha_2, a_1 * denoised + a_2 * denoised_2), sigma_2)
        b_3 = _phi_2(-step.h_eta) / r_2
        return step.end((_phi_1(-step.h_eta) - b_3) * denoised + b_3 * denoised_3)

    return _seeds(model, x, sigmas, noise, eta, s_noise, r_1, rest)


def ddpm(model, x, sigmas, noise):
    """DDPM's ancestral step (Ho et al. 2020) on the variance-preserving x / sqrt(1 + sigma^2): the
    posterior mean from the predicted noise, plus its standard deviation times fresh noise."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        eps = derivative(x, sigma, model(x, sigma))
        acp, acp_prev = 1 / ((sigma * sigma) + 1), 1 / ((sigma_prev * sigma_prev) + 1)
        alpha = acp / acp_prev
        x = (1.0 / alpha).sqrt() * (x / torch.sqrt(1.0 + sigma**2.0) - (1 - alpha) * eps / (1 - acp).sqrt())
        if sigma_prev > 0:
            x = x + ((1 - alpha) * (1.0 - acp_prev) / (1.0 - acp)).sqrt() * noise(sigma, sigma_prev)
        if sigma_prev != 0:
            x = x * torch.sqrt(1.0 + sigma_prev**2.0)
    return x


def lcm(model, x, sigmas, noise):
    """ComfyUI's LCM: the prediction, noised afresh to the next sigma."""
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


# Our key -> (function, fixed options, discards the penultimate sigma, Brownian noise): k_samplers.SAMPLERS' form
SAMPLERS = {
    "heunpp2": (heunpp2, {}, False, False),
    "gradient_estimation": (gradient_estimation, {}, False, False),
    "gradient_estimation_cfg++": (gradient_estimation, {"cfg_pp": True}, False, False),
    "seeds_2": (seeds_2, {}, False, False),
    "seeds_3": (seeds_3, {}, False, False),
    # These keys override k_samplers.SAMPLERS' (A1111's options and LCM) on ComfyUI's path
    "dpm_fast": (dpm_fast, {"eta": 0.0}, False, False),
    "dpm_adaptive": (dpm_adaptive, {"eta": 0.0}, False, False),
    "lcm": (lcm, {}, False, False),
    "ddpm": (ddpm, {}, False, False),
}
