"""References for ComfyUI's Heun++ 2, gradient estimation and SEEDS-2/3 samplers
(tests/sampling/test_comfy_samplers_more.py), written apart from latentdiff's code, step by step after
ComfyUI's comfy/k_diffusion/sampling.py (its variable names, its buffers), in comfy_refs.py's form:
(model, x, sigmas, noise) with `model.uncond` the last unconditional prediction and `noise()` the next
step noise."""

import torch


def ref_heunpp2(model, x, sigmas, noise):
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat)
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1])) / sigmas[i + 1]
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = (x_3 - model(x_3, sigmas[i + 2])) / sigmas[i + 2]
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def ref_gradient_estimation(model, x, sigmas, noise, cfg_pp=False, ge_gamma=2.0):
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = (x - (model.uncond if cfg_pp else denoised)) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def _coefficients(h, r):
    """exp-integrator weights h phi_1(-r h) and h phi_2(-r h) as (e^z - 1) and (e^z - 1 - z) / z, z = -r h."""
    z = -r * h
    return torch.expm1(z), (torch.expm1(z) - z) / z


def ref_seeds(model, x, sigmas, noise, stages=2, eta=1.0):
    """SEEDS-2 (r = 1/2) and SEEDS-3 (r = 1/3, 2/3) as ComfyUI's sample_seeds_2 / sample_seeds_3."""
    rs = [0.5] if stages == 2 else [1.0 / 3, 2.0 / 3]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = -sigmas[i].log(), -sigmas[i + 1].log()
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lam = [torch.lerp(lambda_s, lambda_t, r) for r in rs]
        sig = [(-v).exp() for v in lam]
        alpha = [s * v.exp() for s, v in zip(sig, lam)]
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        # the first stage
        p1, _ = _coefficients(h_eta, rs[0])
        x_2 = sig[0] / sigmas[i] * (-rs[0] * h * eta).exp() * x - alpha[0] * p1 * denoised
        sde = (-2 * rs[0] * h * eta).expm1().neg().sqrt() * noise()
        x_2 = x_2 + sde * sig[0]
        denoised_2 = model(x_2, sig[0])
        if stages == 2:
            full, _ = _coefficients(h_eta, 1.0)
            mixed = denoised + (denoised_2 - denoised) / (2 * rs[0])
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * full * mixed
            last_r = rs[0]
        else:
            p1_2, p2_2 = _coefficients(h_eta, rs[1])
            a3_2 = rs[1] / rs[0] * p2_2
            x_3 = sig[1] / sigmas[i] * (-rs[1] * h * eta).exp() * x - alpha[1] * (
                (p1_2 - a3_2) * denoised + a3_2 * denoised_2
            )
            seg = (rs[0] - rs[1]) * h * eta
            sde = sde * seg.exp() + (2 * seg).expm1().neg().sqrt() * noise()
            x_3 = x_3 + sde * sig[1]
            denoised_3 = model(x_3, sig[1])
            p1_t, p2_t = _coefficients(h_eta, 1.0)
            b3 = p2_t / rs[1]
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * ((p1_t - b3) * denoised + b3 * denoised_3)
            last_r = rs[1]
        seg = (last_r - 1) * h * eta
        sde = sde * seg.exp() + (2 * seg).expm1().neg().sqrt() * noise()
        x = x + sde * sigmas[i + 1]
    return x


def ref_dpm_solver(model, x, sigmas, noise, adaptive=False):
    """ComfyUI's dpm_fast / dpm_adaptive: k-diffusion's own, its default eta 0, between the schedule's
    last non-zero sigma and its first."""
    from tests.sampling.kdiffusion_ref import load

    ks, _ = load()
    sigma_min = sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    if adaptive:
        return ks.sample_dpm_adaptive(model, x, sigma_min, sigmas[0], disable=True)
    return ks.sample_dpm_fast(model, x, sigma_min, sigmas[0], len(sigmas) - 1, disable=True)


def ref_ddpm(model, x, sigmas, noise):
    """ComfyUI's sample_ddpm: its generic step sampler around DDPMSampler_step."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma, sigma_prev, eps = sigmas[i], sigmas[i + 1], (x - denoised) / sigmas[i]
        x = x / torch.sqrt(1.0 + sigma**2.0)
        alpha_cumprod, alpha_cumprod_prev = 1 / (sigma * sigma + 1), 1 / (sigma_prev * sigma_prev + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            mu = mu + ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise()
        x = mu * torch.sqrt(1.0 + sigma_prev**2.0) if sigma_prev != 0 else mu
    return x


def ref_lcm(model, x, sigmas, noise):
    """ComfyUI's sample_lcm with EPS noise scaling (noise * sigma + latent)."""
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i])
        if sigmas[i + 1] > 0:
            x = noise() * sigmas[i + 1] + x
    return x
