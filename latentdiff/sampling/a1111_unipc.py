"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", https://arxiv.org/abs/2302.04867) as A1111 1.10 runs its "UniPC" (its
modules/models/diffusion/uni_pc, read for behaviour; our code): multistep, data prediction, the B(h)
variants bh1 (B(h) = h) and bh2 (B(h) = e^h - 1), order 3 with lower orders at the start and the end,
on the discrete model seen in continuous time: t_i = (i + 1) / N carries log alpha-bar_i / 2, linear
in between, and the network is asked at timestep 1000 (t - 1 / N). A1111's own settings are the
defaults (variant bh1, skip type time_uniform, order 3, lower order final).
"""

from __future__ import annotations

import torch

from latentdiff.errors import UsageError


class VPTime:
    """The discrete schedule in continuous time t in (0, 1]: log alpha(t) piecewise linear."""

    def __init__(self, acp: torch.Tensor):
        self.n = len(acp)
        self.grid = torch.linspace(0.0, 1.0, self.n + 1)[1:]
        self.log_alpha = 0.5 * acp.float().log()

    def log_mean(self, t: torch.Tensor) -> torch.Tensor:
        lo = (torch.searchsorted(self.grid, t.reshape(1)) - 1).clamp(0, self.n - 2)[0]
        x0, x1, y0, y1 = self.grid[lo], self.grid[lo + 1], self.log_alpha[lo], self.log_alpha[lo + 1]
        return y0 + (t - x0) * (y1 - y0) / (x1 - x0)

    def std(self, t):
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_mean(t)))

    def lam(self, t):
        """Half log-SNR: log alpha - log sigma."""
        m = self.log_mean(t)
        return m - 0.5 * torch.log(1.0 - torch.exp(2.0 * m))


def _times(skip: str, t_T: float, t_0: float, steps: int) -> torch.Tensor:
    if skip == "time_quadratic":
        return torch.linspace(t_T**0.5, t_0**0.5, steps + 1).pow(2)
    return torch.linspace(t_T, t_0, steps + 1)


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


def _update(data, x, models, times, t, order, vp, variant, corrector):
    """One UniPC step to t of the given order: predictor (UniP-p), then where asked the corrector
    (UniC-p) with the data prediction at the new point. -> (x, that prediction or None)."""
    lam_0, m_0 = vp.lam(times[-1]), models[-1]
    h = vp.lam(t) - lam_0
    rks, d1s = [], []
    for i in range(1, order):
        rk = (vp.lam(times[-(i + 1)]) - lam_0) / h
        rks.append(rk)
        d1s.append((models[-(i + 1)] - m_0) / rk)
    rks = torch.tensor([*rks, 1.0])
    r, b, b_h, h_phi_1 = _coefficients(rks, -h, variant, order)
    alpha_t = torch.exp(vp.log_mean(t))
    x_base = vp.std(t) / vp.std(times[-1]) * x - alpha_t * h_phi_1 * m_0
    d1s = torch.stack(d1s, dim=1) if d1s else None  # (B, K, C, h, w)
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


def unipc(model, x, ts, acp, noise, img2img=False, variant="bh1", order=3, skip="time_uniform", lower_final=True):
    """UniPC over len(ts) steps from t = 1 (from an image: just above ts[-1]) down to t = 1 / N;
    `model(x, timestep) -> eps`."""
    vp = VPTime(acp)
    steps = len(ts)
    if not 1 <= order <= steps:
        raise UsageError(f"UniPC of order {order} needs at least {order} steps here, got {steps}")
    if variant not in ("bh1", "bh2"):
        raise UsageError(f"UniPC variant must be bh1 or bh2, not {variant!r}")

    def data(x, t):  # x0 from the eps at continuous time t
        eps = model(x, ((t - 1.0 / vp.n) * 1000.0).item())
        return (x - vp.std(t) * eps) / torch.exp(vp.log_mean(t))

    t_start = (ts[-1].item() + 1) / 1000 if img2img else 1.0
    times = _times(skip, t_start, 1.0 / vp.n, steps)
    models, seen = [data(x, times[0])], [times[0]]
    for step in range(1, steps + 1):
        last_orders = min(order, steps + 1 - step) if lower_final else order
        step_order = step if step < order else last_orders
        x, model_x = _update(data, x, models, seen, times[step], step_order, vp, variant, step != steps or step < order)
        if step < steps:
            models, seen = (
                [*models, model_x if model_x is not None else data(x, times[step])][-order:],
                [*seen, times[step]][-order:],
            )
    return x
