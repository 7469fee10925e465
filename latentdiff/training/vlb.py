"""The learned variance's training term (Nichol & Dhariwal 2021, improved DDPM): the variational
bound's per-step KL between the true posterior q(x_{t-1} | x_t, x_0) and the model's Gaussian, whose
mean comes from the predicted noise with its gradient stopped (the simple MSE trains the mean) and
whose log-variance interpolates log(beta_t) and log(beta~_t) by the predicted v in [-1, 1]
(diffusers' variance_type "learned_range", as DDPMScheduler samples it). At t = 0 the term is the
discretized Gaussian decoder's negative log-likelihood of the 8-bit image. In bits per dimension."""

from __future__ import annotations

import math

import torch

HYBRID_WEIGHT = 0.001  # L_hybrid = L_simple + lambda L_vlb (the paper's lambda)


def _schedule(scheduler, t: torch.Tensor):
    a = scheduler.alphas_cumprod.to(t.device)
    a_prev = torch.cat([a.new_ones(1), a[:-1]])
    beta = 1 - a / a_prev
    post_var = beta * (1 - a_prev) / (1 - a)
    post_log = torch.log(torch.cat([post_var[1:2], post_var[1:]]))  # clipped: beta~_0 = 0
    view = (-1, 1, 1, 1)
    return (x[t].view(view) for x in (a, a_prev, beta, post_log))


def vlb_loss(scheduler, x0, x_t, t, eps: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B,) the bound's term at `t` for the model's noise prediction `eps` (detached here) and variance
    output `v`, all (B, C, H, W); x0 the clean image in [-1, 1], x_t its noised version."""
    a, a_prev, beta, post_log = _schedule(scheduler, t)
    c0, ct = a_prev.sqrt() * beta / (1 - a), (1 - beta).sqrt() * (1 - a_prev) / (1 - a)
    true_mean = c0 * x0 + ct * x_t
    x0_hat = ((x_t - (1 - a).sqrt() * eps.detach()) / a.sqrt()).clamp(-1, 1)
    mean = c0 * x0_hat + ct * x_t
    frac = (v + 1) / 2
    log_var = frac * torch.log(beta) + (1 - frac) * post_log
    kl = 0.5 * (-1 + log_var - post_log + torch.exp(post_log - log_var) + (true_mean - mean) ** 2 * torch.exp(-log_var))
    nll = -discretized_log_likelihood(x0, mean, log_var)
    per = torch.where((t == 0).view(-1, 1, 1, 1), nll, kl)
    return per.mean(dim=(1, 2, 3)) / math.log(2.0)


def _cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def discretized_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit pixels x in [-1, 1] under N(mean, exp(log_var)) integrated over each pixel's bin."""
    inv = torch.exp(-0.5 * log_var)
    hi, lo = _cdf(inv * (x - mean + 1 / 255)), _cdf(inv * (x - mean - 1 / 255))
    log_hi = torch.log(hi.clamp(min=1e-12))
    log_lo = torch.log((1 - lo).clamp(min=1e-12))
    mid = torch.log((hi - lo).clamp(min=1e-12))
    return torch.where(x < -0.999, log_hi, torch.where(x > 0.999, log_lo, mid))
