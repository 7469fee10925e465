"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", https://arxiv.org/abs/2302.04867) as A1111 1.10 runs its "UniPC" (its
modules/models/diffusion/uni_pc, a port of the paper's reference code; read for behaviour, our code):
multistep, data prediction, on the discrete model seen in continuous time: t_i = (i + 1) / N carries
log alpha-bar_i / 2, linear in between, and the network is asked at timestep 1000 (t - 1 / N).

A1111's settings choose the rest (SETTINGS, their defaults first): `uni_pc_variant` bh1 (B(h) = h),
bh2 (B(h) = e^h - 1) or vary_coeff (the reference's varying coefficients: the inverse of the matrix of
r_i^k / (k + 1)!, whose corrector weighs the new point's difference by its last row's one term, as
the reference does); `uni_pc_skip_type` time_uniform, time_quadratic or logSNR (uniform in half
log-SNR, mapped back to t through the piecewise linear schedule); `uni_pc_order` (3; lower orders at
the start); `uni_pc_lower_order_final` (lower orders at the end too).
"""

from __future__ import annotations

import math

import torch

from latentdiff.errors import UsageError
from latentdiff.sampling.unipc_settings import SETTINGS, check_setting


def unipc_options(options: dict) -> dict:
    """unipc()'s keywords from A1111's settings among a run's `options` (checked)."""
    return {SETTINGS[k][0]: check_setting(k, v) for k, v in options.items() if k in SETTINGS}


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise linear through (xp, fp), xp increasing; beyond its ends the end pieces go on."""
    flat = x.reshape(-1)
    lo = (torch.searchsorted(xp, flat) - 1).clamp(0, len(xp) - 2)
    x0, x1, y0, y1 = xp[lo], xp[lo + 1], fp[lo], fp[lo + 1]
    return (y0 + (flat - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)


class VPTime:
    """The discrete schedule in continuous time t in (0, 1]: log alpha(t) piecewise linear."""

    def __init__(self, acp: torch.Tensor):
        self.n = len(acp)
        self.grid = torch.linspace(0.0, 1.0, self.n + 1)[1:]
        self.log_alpha = 0.5 * acp.float().log()

    def log_mean(self, t: torch.Tensor) -> torch.Tensor:
        return _interp(torch.as_tensor(t, dtype=torch.float32), self.grid, self.log_alpha)

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_mean(t)))

    def lam(self, t):
        """Half log-SNR: log alpha - log sigma."""
        m = self.log_mean(t)
        return m - 0.5 * torch.log(1.0 - torch.exp(2.0 * m))

    def time_of(self, lam: torch.Tensor) -> torch.Tensor:
        """The t whose half log-SNR is `lam` (through log alpha, on the same pieces)."""
        log_alpha = -0.5 * torch.logaddexp(torch.zeros(1), -2.0 * lam)
        return _interp(log_alpha, self.log_alpha.flip(0), self.grid.flip(0))


def _times(vp: VPTime, skip: str, t_T: float, t_0: float, steps: int) -> torch.Tensor:
    if skip == "time_quadratic":
        return torch.linspace(t_T**0.5, t_0**0.5, steps + 1).pow(2)
    if skip == "logSNR":
        ends = [vp.lam(torch.tensor(t)).item() for t in (t_T, t_0)]
        return vp.time_of(torch.linspace(*ends, steps + 1))
    return torch.linspace(t_T, t_0, steps + 1)


def _differences(vp, models, times, t, order):
    """h (the step in half log-SNR), the ratios r_k of the earlier steps to it (1 last), and the
    scaled differences D_k of the earlier data predictions ((B, K, C, h, w), or None at order 1)."""
    lam_0, m_0 = vp.lam(times[-1]), models[-1]
    h = vp.lam(t) - lam_0
    rks, d1s = [], []
    for i in range(1, order):
        rk = (vp.lam(times[-(i + 1)]) - lam_0) / h
        rks.append(rk)
        d1s.append((models[-(i + 1)] - m_0) / rk)
    return h, torch.tensor([*rks, 1.0]), torch.stack(d1s, dim=1) if d1s else None


def _coefficients(rks, hh, variant, order):
    """UniPC's R (powers of the step ratios) and b (the phi_k(h) terms over B(h)); B(h)."""
    h_phi_1 = torch.expm1(hh)
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.tensor(b), b_h, h_phi_1


def _start(vp, x, m_0, t, t_0, h_phi_1):
    """The step's exponential-integrator part: sigma_t / sigma_0 x - alpha_t (e^-h - 1) x0."""
    return vp.std(t) / vp.std(t_0) * x - torch.exp(vp.log_mean(t)) * h_phi_1 * m_0


def _update(data, x, models, times, t, order, vp, variant, corrector):
    """One UniPC step (B(h) variants) to t of the given order: predictor (UniP-p), then where asked
    the corrector (UniC-p) with the data prediction at the new point. -> (x, that prediction or None)."""
    h, rks, d1s = _differences(vp, models, times, t, order)
    r, b, b_h, h_phi_1 = _coefficients(rks, -h, variant, order)
    alpha_t, m_0 = torch.exp(vp.log_mean(t)), models[-1]
    x_base = _start(vp, x, m_0, t, times[-1], h_phi_1)
    pred = 0
    if d1s is not None:
        rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
        pred = torch.einsum("k,bkchw->bchw", rhos_p, d1s)
    x_t = x_base - alpha_t * b_h * pred
    if not corrector:
        return x_t, None
    rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r, b)
    model_t = data(x_t, t)
    corr = 0 if d1s is None else torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1s)
    return x_base - alpha_t * b_h * (corr + rhos_c[-1] * (model_t - m_0)), model_t


def _phis(hh: torch.Tensor, count: int) -> list:
    """h phi_1(h), then phi_{k+1} = phi_k / h - 1 / k! (the reference's recursion), `count` of them."""
    out = [torch.expm1(hh)]
    for k in range(1, count):
        out.append(out[-1] / hh - 1 / math.factorial(k))
    return out


def _vary_update(data, x, models, times, t, order, vp, corrector):
    """One UniPC step of the varying-coefficient form: the differences weighted by the rows of the
    inverse of C (C_ik = r_i^k / (k + 1)!), each row by its phi term. -> (x, prediction or None)."""
    h, rks, d1s = _differences(vp, models, times, t, order)
    k_all = len(rks)
    c = torch.stack([rks.pow(k) / math.factorial(k + 1) for k in range(k_all)], dim=1)
    phis = _phis(-h, k_all + 1)
    alpha_t, m_0 = torch.exp(vp.log_mean(t)), models[-1]
    x_base = _start(vp, x, m_0, t, times[-1], phis[0])

    def weighted(rows):  # sum over k of phi_{k+1} (D . rows[k])
        return sum(phis[k + 1] * torch.einsum("bkchw,k->bchw", d1s, rows[k]) for k in range(k_all - 1))

    x_t = x_base if d1s is None else x_base - alpha_t * weighted(torch.linalg.inv(c[:-1, :-1]))
    if not corrector:
        return x_t, None
    model_t = data(x_t, t)
    a_c = torch.linalg.inv(c)
    x_c = x_base if d1s is None else x_base - alpha_t * weighted(a_c[:, :-1])
    # the new point's difference: one term, phi_K with row max(K - 2, 0)'s last entry (the reference's)
    return x_c - alpha_t * phis[k_all] * (model_t - m_0) * a_c[max(k_all - 2, 0), -1], model_t


def unipc(model, x, ts, acp, noise, img2img=False, variant="bh1", order=3, skip="time_uniform", lower_final=True):
    """UniPC over len(ts) steps from t = 1 (from an image: just above ts[-1]) down to t = 1 / N;
    `model(x, timestep) -> eps`."""
    vp = VPTime(acp)
    steps = len(ts)
    if not 1 <= order <= steps:
        raise UsageError(f"UniPC of order {order} needs at least {order} steps here, got {steps}")
    check_setting("uni_pc_variant", variant), check_setting("uni_pc_skip_type", skip)

    def data(x, t):  # x0 from the eps at continuous time t
        eps = model(x, ((t - 1.0 / vp.n) * 1000.0).item())
        return (x - vp.std(t) * eps) / torch.exp(vp.log_mean(t))

    def update(x, models, seen, t, step_order, corrector):
        if variant == "vary_coeff":
            return _vary_update(data, x, models, seen, t, step_order, vp, corrector)
        return _update(data, x, models, seen, t, step_order, vp, variant, corrector)

    t_start = (ts[-1].item() + 1) / 1000 if img2img else 1.0
    times = _times(vp, skip, t_start, 1.0 / vp.n, steps)
    models, seen = [data(x, times[0])], [times[0]]
    for step in range(1, steps + 1):
        last_orders = min(order, steps + 1 - step) if lower_final else order
        step_order = step if step < order else last_orders
        x, model_x = update(x, models, seen, times[step], step_order, step != steps or step < order)
        if step < steps:
            models, seen = (
                [*models, model_x if model_x is not None else data(x, times[step])][-order:],
                [*seen, times[step]][-order:],
            )
    return x
