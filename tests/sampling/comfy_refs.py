"""References for ComfyUI's own samplers (tests/sampling/test_comfy_samplers.py), written apart from
latentdiff's code, line by line after ComfyUI's comfy/k_diffusion/sampling.py (its buffers, its variable
names), or independently where an integral is involved (DEIS in float64 with the analytic derivative,
SA-Solver's Adams weights by quadrature). Each takes (model, x, sigmas, noise): `model(x, sigma)` the
guided denoised prediction with `model.uncond` the last unconditional one (and `model.s` ComfyUI's
model sampling), `noise()` the next step noise."""

import numpy as np
import torch


def ancestral(sigma_from, sigma_to, eta):
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


def ref_ipndm(model, x, sigmas, noise, variable=False):
    buffer_model = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur)
        d_cur = (x - denoised) / t_cur
        order = min(4, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d_cur
        elif not variable:
            b = buffer_model
            if order == 2:
                x_next = x + (t_next - t_cur) * (3 * d_cur - b[-1]) / 2
            elif order == 3:
                x_next = x + (t_next - t_cur) * (23 * d_cur - 16 * b[-1] + 5 * b[-2]) / 12
            else:
                x_next = x + (t_next - t_cur) * (55 * d_cur - 59 * b[-1] + 37 * b[-2] - 9 * b[-3]) / 24
        else:
            x_next = x + (t_next - t_cur) * ipndm_v_combination(d_cur, buffer_model, sigmas, i, order)
        if len(buffer_model) == 3:
            buffer_model = [buffer_model[1], buffer_model[2], d_cur]
        else:
            buffer_model.append(d_cur)
        x = x_next
    return x


def ipndm_v_combination(d_cur, b, t, i, order):
    h_n, h_n_1 = t[i + 1] - t[i], t[i] - t[i - 1]
    if order == 2:
        return (2 + h_n / h_n_1) / 2 * d_cur - (h_n / h_n_1) / 2 * b[-1]
    h_n_2 = t[i - 1] - t[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        c1, c2, c3 = (
            (2 + h_n / h_n_1) / 2 + temp1,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
            temp1 * h_n_1 / h_n_2,
        )
        return c1 * d_cur + c2 * b[-1] + c3 * b[-2]
    h_n_3 = t[i - 2] - t[i - 3]
    temp2 = (
        ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2)))
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
        / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    )
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    c1 = (2 + h_n / h_n_1) / 2 + temp1 + temp2
    c2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + ratio) * temp2
    c3 = temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1 + h_n_2 / h_n_3)) * temp2
    c4 = -temp2 * ratio * h_n_1 / h_n_2
    return c1 * d_cur + c2 * b[-1] + c3 * b[-2] + c4 * b[-3]


def ref_res_multistep(model, x, sigmas, noise, eta=0.0, cfg_pp=False):
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond
        sigma_down, sigma_up = ancestral(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + (x - uncond) / sigmas[i] * sigma_down
            else:
                x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1, b2 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0), torch.nan_to_num(phi2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
                x = torch.exp(-h) * x + h * (b1 * uncond + b2 * old_denoised)
            else:
                x = torch.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise() * sigma_up
        old_denoised = uncond if cfg_pp else denoised
        old_sigma_down = torch.as_tensor(sigma_down)
    return x


def ref_euler_cfg_pp(model, x, sigmas, noise, eta=0.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s, alpha_t = sigmas[i] * sigmas[i].log().neg().exp(), sigmas[i + 1] * sigmas[i + 1].log().neg().exp()
        d = (x - alpha_s * model.uncond) / sigmas[i]
        sigma_down, sigma_up = ancestral(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0:
            x = x + alpha_t * noise() * sigma_up
    return x


def ref_dpmpp_2m_cfg_pp(model, x, sigmas, noise):
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = model.uncond
        h = t_fn(sigmas[i + 1]) - t_fn(sigmas[i])
        mix = -torch.exp(-h) * uncond
        if old_uncond is not None and sigmas[i + 1] != 0:
            r = (t_fn(sigmas[i]) - t_fn(sigmas[i - 1])) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


def ref_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise):
    sigma_fn, t_fn = (lambda t: t.neg().exp()), (lambda sigma: sigma.log().neg())
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = ancestral(sigmas[i], sigmas[i + 1], 1.0)
        if sigma_down == 0:
            x = denoised + (x - model.uncond) / sigmas[i] * sigma_down
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (sigma_fn(s) / sigma_fn(t)) * (x + (denoised - model.uncond)) - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, sigma_fn(s))  # model.uncond is now the second call's, as in ComfyUI
            x = (sigma_fn(t_next) / sigma_fn(t)) * (x + (denoised - model.uncond)) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise() * sigma_up
    return x


def ref_er_sde(model, x, sigmas, noise):
    scaler = lambda v: v * ((v**0.3).exp() + 10.0)  # noqa: E731
    lambdas = sigmas.log().neg().neg().exp()
    points = torch.arange(0, 200.0, dtype=torch.float32)
    old = old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        stage = min(3, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ls, lt = lambdas[i], lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / ls, sigmas[i + 1] / lt
            r = scaler(lt) / scaler(ls)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lt - ls
                pos = lt + points * (-dt / 200.0)
                d = (denoised - old) / (ls - lambdas[i - 1])
                x = x + alpha_t * (dt + torch.sum(1 / scaler(pos)) * (-dt / 200.0) * scaler(lt)) * d
                if stage >= 3:
                    s_u = torch.sum((pos - ls) / scaler(pos)) * (-dt / 200.0)
                    u = (d - old_d) / ((ls - lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + s_u * scaler(lt)) * u
                old_d = d
            x = x + alpha_t * noise() * (lt**2 - ls**2 * r**2).sqrt().nan_to_num(nan=0.0)
        old = denoised
    return x


def ref_deis(model, x, sigmas, noise, max_order=3, n=10_000):
    """DEIS "tab" in float64 with the analytic d log alpha / dt = -(beta_0 + t (beta_1 - beta_0))."""
    eps, lo, hi = 1e-3, 0.002, 80.0
    beta_d = 2 * (np.log(lo**2 + 1) / eps - np.log(hi**2 + 1)) / (eps - 1)
    b0 = np.log(hi**2 + 1) - 0.5 * beta_d
    b1 = beta_d + b0
    ts = (np.sqrt(b0**2 + 2 * beta_d * np.log(sigmas.double().numpy() ** 2 + 1)) - b0) / beta_d
    history = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d_cur = (x - denoised) / sigmas[i]
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (sigmas[i + 1] - sigmas[i]) * d_cur
        else:
            taus = np.linspace(ts[i], ts[i + 1], n)
            alpha = np.exp(-0.5 * taus**2 * (b1 - b0) - taus * b0)
            integrand = 0.5 * (b0 + taus * (b1 - b0)) / np.sqrt(alpha * (1 - alpha))
            points = [ts[i - k] for k in range(order)]
            step = x
            for j, v in enumerate([d_cur, *history[::-1]][:order]):
                poly = np.prod([(taus - points[k]) / (points[j] - points[k]) for k in range(order) if k != j], axis=0)
                step = step + float(np.sum(integrand * poly) * (ts[i + 1] - ts[i]) / n) * v
            x = step
        history = (history + [d_cur])[-(max_order - 1) :]
    return x


def adams_weights(sigma_next, points, s, t, tau):
    """SA-Solver's b_j: alpha_t (1 + tau^2) times the integral over [s, t] of e^((1 + tau^2)(v - t)) times
    the Lagrange basis polynomial j of `points`, by quadrature in float64."""
    from scipy import integrate

    mul, out = 1 + tau**2, []
    for j in range(len(points)):
        others = [points[k] for k in range(len(points)) if k != j]

        def integrand(v, j=j, others=others):
            return np.exp(mul * (v - t)) * np.prod([(v - o) / (points[j] - o) for o in others])

        out.append(sigma_next * np.exp(t) * mul * integrate.quad(integrand, s, t)[0])
    return out


def ref_sa_solver(model, x, sigmas, noise, pece=False):
    lam = sigmas.double().log().neg().numpy()
    sig = sigmas.double().numpy()
    hi, lo = (float(model.s.sigma(torch.tensor((1.0 - p) * 999.0))) for p in (0.2, 0.8))
    tau_of = lambda v: 1.0 if hi >= v >= lo else 0.0  # noqa: E731
    x_pred, h, tau, fresh, preds, n = x, 0.0, 0.0, 0.0, [], len(sigmas)
    for i in range(n - 1):
        denoised = model(x_pred, sigmas[i])
        preds = (preds + [denoised])[-4:]
        p_order = min(3, len(preds), n - 2 - i)
        c_order = 0 if i == 0 or (sig[i + 1] == 0 and not pece) else min(4, len(preds), n - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = adams_weights(sig[i], lam[i - c_order + 1 : i + 1], lam[i - 1], lam[i], tau)
            x = float(sig[i] / sig[i - 1] * np.exp(-(tau**2) * h)) * x + sum(w * d for w, d in zip(b, preds[-c_order:]))
            x = x + fresh if tau > 0 else x
            if pece:
                denoised = preds[-1] = model(x, sigmas[i])
        if sig[i + 1] == 0:
            x = denoised
            continue
        tau = tau_of(sig[i + 1])
        b = adams_weights(sig[i + 1], lam[i - p_order + 1 : i + 1], lam[i], lam[i + 1], tau)
        h = lam[i + 1] - lam[i]
        x_pred = float(sig[i + 1] / sig[i] * np.exp(-(tau**2) * h)) * x + sum(
            w * d for w, d in zip(b, preds[-p_order:])
        )
        if tau > 0:
            fresh = noise() * float(sig[i + 1] * np.sqrt(-np.expm1(-2 * tau**2 * h)))
            x_pred = x_pred + fresh
    return x
