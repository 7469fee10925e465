"""ComfyUI's own samplers beyond k-diffusion's (its comfy/k_diffusion/sampling.py, read for behaviour,
GPL-3.0; our code, the same arithmetic in the same order), in k_samplers.py's signature
`sample(model, x, sigmas, noise, **options) -> x` for an eps- or v-prediction model's sigmas:

- iPNDM (Zhang & Chen 2023, improved PNDM): Adams-Bashforth on dx/dsigma with fixed coefficients
  over up to three past derivatives; iPNDM-v its variable-step coefficients.
- Res multistep (Zhang et al. 2023, arXiv 2308.02157): the second-order exponential multistep
  "RES" step in log-sigma; its ancestral form steps to sigma_down and adds fresh noise.
- ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169): the extended reverse-time SDE's three-stage
  solver with ComfyUI's noise scaler x (e^(x^0.3) + 10) and its 200-point integrals.
- DEIS (Zhang & Chen 2023) with the "tab" weights ComfyUI computes (over EDM's VP time mapping).
- SA-Solver (Xue et al. 2023) and its PECE form: sampling/comfy_sa_solver.py.
- Heun++ 2, gradient estimation (and its CFG++ form), SEEDS-2/3: sampling/comfy_samplers_more.py.
- CFG++ (Chung et al. 2024): Euler, Euler ancestral, DPM++ 2M and DPM++ 2S ancestral whose
  renoising direction is the unconditional prediction (`model.uncond_denoised`, the guided model's
  last one); ComfyUI computes it at CFG 1 too.
"""

from __future__ import annotations

import torch

from latentdiff.sampling import comfy_samplers_more
from latentdiff.sampling.comfy_sa_solver import sa_solver
from latentdiff.sampling.comfy_samplers_more import half_log_snr as _half_log_snr
from latentdiff.sampling.k_samplers import ancestral_step, derivative


def _ab(i, d, ds, sigmas, variable):
    """The iPNDM step's combination of dx/dsigma `d` and the past ones `ds` (newest last)."""
    order = min(4, i + 1)
    if order == 1:
        return d
    if not variable:
        weights = {2: (3, -1, 2), 3: (23, -16, 5, 12), 4: (55, -59, 37, -9, 24)}[order]
        return sum(w * v for w, v in zip(weights[:-1], [d, *ds[::-1]])) / weights[-1]
    h = [sigmas[i + 1] - sigmas[i]] + [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
    return sum(c * v for c, v in zip(_variable(h, order), [d, *ds[::-1]]))


def _variable(h, order):
    """iPNDM-v's coefficients for step sizes h = (h_n, h_n-1, ...)."""
    h0, h1 = h[0], h[1]
    c1, c2 = (2 + h0 / h1) / 2, -(h0 / h1) / 2
    if order == 2:
        return c1, c2
    h2 = h[2]
    t1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return c1 + t1, c2 - (1 + h1 / h2) * t1, t1 * h1 / h2
    h3 = h[3]
    t2 = (
        ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2)))
        * (h0 * (h0 + h1) * (h0 + h1 + h2))
        / (h1 * (h1 + h2) * (h1 + h2 + h3))
    )
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return (
        c1 + t1 + t2,
        c2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
        t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2,
        -t2 * q * h1 / h2,
    )


def ipndm(model, x, sigmas, noise, variable=False):
    """iPNDM: linear multistep on dx/dsigma, Euler first, the denoised prediction on the last step."""
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = derivative(x, sigmas[i], denoised)
        x = denoised if sigmas[i + 1] == 0 else x + (sigmas[i + 1] - sigmas[i]) * _ab(i, d, ds, sigmas, variable)
        ds = [*ds, d][-3:]
    return x


def res_multistep(model, x, sigmas, noise, eta=0.0, s_noise=1.0, cfg_pp=False):
    """RES second-order multistep in t = -log sigma (Euler first and to sigma 0), ancestral for eta > 0."""
    old, old_down = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond_denoised if cfg_pp else denoised
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if down == 0 or old is None:
            x = denoised + derivative(x, sigmas[i], uncond) * down if cfg_pp else x + derivative(x, sigmas[i], denoised) * (down - sigmas[i])  # fmt: skip
        else:
            t, t_old, t_next, t_prev = (s.log().neg() for s in (sigmas[i], old_down, down, sigmas[i - 1]))
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1, b2 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0), torch.nan_to_num(phi2 / c2, nan=0.0)
            x = x + (denoised - uncond) if cfg_pp else x
            x = h.neg().exp() * x + h * (b1 * uncond + b2 * old)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
        old, old_down = uncond, torch.as_tensor(down, dtype=sigmas.dtype)
    return x


def euler_cfg_pp(model, x, sigmas, noise, eta=0.0, s_noise=0.0):
    """Euler (ancestral for eta > 0) CFG++: renoised along the unconditional prediction."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * _half_log_snr(sigmas[i]).exp()
        alpha_t = sigmas[i + 1] * _half_log_snr(sigmas[i + 1]).exp()
        d = derivative(x, sigmas[i], alpha_s * model.uncond_denoised)
        down, up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * denoised + alpha_t * down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def dpmpp_2m_cfg_pp(model, x, sigmas, noise):
    """DPM-Solver++(2M) CFG++."""
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond_denoised
        t, t_next = _half_log_snr(sigmas[i]), _half_log_snr(sigmas[i + 1])
        h = t_next - t
        mix = -torch.exp(-h) * uncond
        if old is not None and sigmas[i + 1] != 0:
            r = (t - _half_log_snr(sigmas[i - 1])) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old)
        x = denoised + mix + torch.exp(-h) * x
        old = uncond
    return x


def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) ancestral CFG++: single steps to sigma_down from x moved by (denoised - uncond)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond_denoised
        down, up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if down == 0:
            x = denoised + derivative(x, sigmas[i], uncond) * down
        else:
            t, t_next = _half_log_snr(sigmas[i]), _half_log_snr(torch.as_tensor(down))
            h = t_next - t
            s = t + h / 2
            x_2 = (s.neg().exp() / t.neg().exp()) * (x + (denoised - uncond)) - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, s.neg().exp())  # ComfyUI then moves x by this call's unconditional prediction
            x = (t_next.neg().exp() / t.neg().exp()) * (x + (denoised - model.uncond_denoised)) - (
                -h
            ).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


def _er_scaler(v):
    return v * ((v**0.3).exp() + 10.0)


def er_sde(model, x, sigmas, noise, s_noise=1.0, max_stage=3, points=200.0):
    """ER-SDE-Solver-3 over lambda = sigma / alpha, its integrals as sums over `points` points."""
    lambdas = _half_log_snr(sigmas).neg().exp()
    grid = torch.arange(0, points, dtype=torch.float32, device=x.device)
    old, old_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            old = denoised
            continue
        ls, lt = lambdas[i], lambdas[i + 1]
        alpha_s, alpha_t = sigmas[i] / ls, sigmas[i + 1] / lt
        r = _er_scaler(lt) / _er_scaler(ls)
        x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
        if min(max_stage, i + 1) >= 2:
            dt = lt - ls
            step = -dt / points
            pos = lt + grid * step
            scaled = _er_scaler(pos)
            d = (denoised - old) / (ls - lambdas[i - 1])
            x = x + alpha_t * (dt + torch.sum(1 / scaled) * step * _er_scaler(lt)) * d
            if min(max_stage, i + 1) >= 3:
                s_u = torch.sum((pos - ls) / scaled) * step
                u = (d - old_d) / ((ls - lambdas[i - 2]) / 2)
                x = x + alpha_t * ((dt**2) / 2 + s_u * _er_scaler(lt)) * u
            old_d = d
        if s_noise > 0:
            spread = (lt**2 - ls**2 * r**2).sqrt().nan_to_num(nan=0.0)
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old = denoised
    return x


def _vp_times(sigmas):
    """DEIS's VP times of `sigmas` over EDM's range (sigma 0.002 to 80, epsilon 1e-3), as ComfyUI maps
    them (float32): (times, beta_0, beta_1)."""
    eps, lo, hi = 1e-3, torch.tensor(0.002), torch.tensor(80.0)
    beta_d = 2 * ((lo**2 + 1).log() / eps - (hi**2 + 1).log()) / (eps - 1)
    beta_min = (hi**2 + 1).log() - 0.5 * beta_d
    times = ((beta_min**2 + 2 * beta_d * (sigmas.cpu() ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    return times, beta_min, beta_d + beta_min


def deis_coefficients(sigmas, max_order=3, n=10_000):
    """DEIS's "tab" weights (Zhang & Chen 2023) per step: the exponential integrator's integral of each
    past derivative's Lagrange basis polynomial in VP time, as an n-point sum."""
    times, b0, b1 = _vp_times(sigmas)
    out = []
    for i in range(len(times) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            out.append([])
            continue
        taus = torch.linspace(times[i], times[i + 1], n)
        with torch.enable_grad():
            t = taus.clone().requires_grad_(True)
            alpha = torch.exp(-0.5 * t**2 * (b1 - b0) - t * b0)
            alpha.log().sum().backward()
        integrand = -0.5 * t.grad / torch.sqrt(alpha.detach() * (1 - alpha.detach()))
        prev = times[[i - k for k in range(order)]]
        basis = [
            torch.prod(torch.stack([(taus - prev[k]) / (prev[j] - prev[k]) for k in range(order) if k != j]), 0)
            for j in range(order)
        ]
        out.append([torch.sum(integrand * b) * ((times[i + 1] - times[i]) / n) for b in basis])
    return out


def deis(model, x, sigmas, noise, max_order=3):
    """DEIS (Zhang & Chen 2023) with ComfyUI's "tab" weights: multistep on dx/dsigma, Euler first and last."""
    weights = deis_coefficients(sigmas, max_order)
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = derivative(x, sigmas[i], denoised)
        if min(max_order, i + 1) == 1 or sigmas[i + 1] <= 0:
            x = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            x = x + sum(w.to(x.device) * v for w, v in zip(weights[i], [d, *ds[::-1]]))
        ds = [*ds, d][-(max_order - 1) :]
    return x


# Our key -> (function, fixed options, discards the penultimate sigma, Brownian noise): k_samplers.SAMPLERS' form
SAMPLERS = {
    "ipndm": (ipndm, {}, False, False),
    "ipndm_v": (ipndm, {"variable": True}, False, False),
    "res_multistep": (res_multistep, {}, False, False),
    "res_multistep_a": (res_multistep, {"eta": 1.0}, False, False),
    "res_multistep_cfg++": (res_multistep, {"cfg_pp": True}, False, False),
    "res_multistep_a_cfg++": (res_multistep, {"eta": 1.0, "cfg_pp": True}, False, False),
    "er_sde": (er_sde, {}, False, False),
    "deis": (deis, {}, False, False),
    "sa_solver": (sa_solver, {}, False, False),
    "sa_solver_pece": (sa_solver, {"pece": True}, False, False),  # under ComfyUI's noise; diffusers' DEIS otherwise
    "euler_cfg++": (euler_cfg_pp, {}, False, False),
    "euler_a_cfg++": (euler_cfg_pp, {"eta": 1.0, "s_noise": 1.0}, False, False),
    "dpm++2m_cfg++": (dpmpp_2m_cfg_pp, {}, False, False),
    "dpm++2s_a_cfg++": (dpmpp_2s_ancestral_cfg_pp, {}, False, False),
    **comfy_samplers_more.SAMPLERS,
}
CFG_PP = tuple(k for k in SAMPLERS if k.endswith("cfg++"))
