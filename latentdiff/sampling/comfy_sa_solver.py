"""SA-Solver (Xue et al., NeurIPS 2023, arXiv 2309.05019) as ComfyUI runs it (its comfy/k_diffusion/
sa_solver.py and sample_sa_solver, read for behaviour; our code): a stochastic Adams
predictor-corrector in lambda = -log sigma over the data predictions, predictor order 3, corrector
order 4 (both lowered near the end), stochastic (tau = 1) for sigmas between the model's sigma at 20%
and at 80% of its timesteps, ODE elsewhere. The step's fresh noise is the sampler's noise; with
`pece` the corrected state is evaluated again (ComfyUI's sa_solver_pece)."""

from __future__ import annotations

import math

import torch


def exponential_coefficients(s: torch.Tensor, t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """(1 + tau^2) times the integral of e^((1 + tau^2)(x - t)) x^p over [s, t], p = 0..order-1, by
    integration by parts (a lower-triangular recursion of factorial ratios over powers of 1 + tau^2)."""
    mul = 1 + tau**2
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    ends = t**p - s**p * (-mul * (t - s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_fact = (p + 1).lgamma()
    coefficients = log_fact.unsqueeze(1) - log_fact.unsqueeze(0)
    if tau > 0:
        coefficients = coefficients - depth * math.log(mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (coefficients.exp() * signs).tril() @ ends


def b_coefficients(sigma_next, lambdas, lambda_s, lambda_t, tau: float) -> torch.Tensor:
    """The Adams weights of the data predictions at `lambdas` for the step lambda_s -> lambda_t: the
    Lagrange basis integrals (a Vandermonde solve) times alpha_t."""
    integrals = exponential_coefficients(lambda_s, lambda_t, len(lambdas), tau)
    weights = torch.linalg.solve(torch.vander(lambdas, len(lambdas), increasing=True).T, integrals)
    return sigma_next * lambda_t.exp() * weights


def sa_solver(model, x, sigmas, noise, predictor=3, corrector=4, pece=False, s_noise=1.0):
    """SA-Solver's predictor-corrector steps (ComfyUI's defaults); `model.wrap` is the model sampling."""
    if len(sigmas) <= 1:
        return x
    lambdas = sigmas.log().neg()
    wrap = model.wrap
    band = [float(wrap.t_to_sigma(torch.tensor((1.0 - p) * 999.0))) for p in (0.2, 0.8)]
    tau_of = lambda sigma: 1.0 if band[0] >= float(sigma) >= band[1] else 0.0  # noqa: E731
    x_pred, h, tau, fresh, preds = x, 0.0, 0.0, 0.0, []
    to_end = float(sigmas[-1]) == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i])
        preds = [*preds, denoised][-max(predictor, corrector) :]
        p_order = min(predictor, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not pece) else min(corrector, len(preds))
        if to_end:
            p_order, c_order = min(p_order, len(sigmas) - 2 - i), min(c_order, len(sigmas) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = b_coefficients(sigmas[i], lambdas[i - c_order + 1 : i + 1], lambdas[i - 1], lambdas[i], tau)
            x = sigmas[i] / sigmas[i - 1] * (-(tau**2) * h).exp() * x + _combine(preds[-c_order:], b)
            if tau > 0 and s_noise > 0:
                x = x + fresh
            if pece:
                denoised = model(x, sigmas[i])
                preds[-1] = denoised
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        tau = tau_of(sigmas[i + 1])
        b = b_coefficients(sigmas[i + 1], lambdas[i - p_order + 1 : i + 1], lambdas[i], lambdas[i + 1], tau)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau**2) * h).exp() * x + _combine(preds[-p_order:], b)
        if tau > 0 and s_noise > 0:
            fresh = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * tau**2 * h).expm1().neg().sqrt() * s_noise
            x_pred = x_pred + fresh
    return x


def _combine(preds: list[torch.Tensor], b: torch.Tensor) -> torch.Tensor:
    """sum_k b_k preds_k, as ComfyUI's tensordot over the stacked predictions."""
    return torch.tensordot(torch.stack(preds, dim=1), b.to(preds[0]), dims=([1], [0]))
