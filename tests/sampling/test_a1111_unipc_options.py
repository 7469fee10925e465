"""A1111's UniPC settings on its own path (sampling/a1111_unipc.py): the variants bh1, bh2 and vary_coeff,
the skip types time_uniform, time_quadratic and logSNR, the order and lower-order-final, against the
UniPC reference algorithm (wl-zhao/UniPC's uni_pc.py, which A1111's modules/models/diffusion/uni_pc ports)
rebuilt here in float64 numpy from its formulas; the three variants agree as the steps grow (they solve
one ODE); the settings reach the sampler through the Python API, the infotext and A1111's API."""

import math

import numpy as np
import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.sampling import a1111, a1111_timesteps
from latentdiff.sampling.a1111_unipc import VPTime, unipc
from tests.sampling.test_a1111_img2img import pixels
from tests.sampling.test_a1111_path import SIZE, STEPS, Generators, close, ours
from tests.sampling.test_a1111_timesteps import BETAS, _cfg_eps, _Plain, fake_eps


class Schedule:
    """The discrete schedule in continuous time, float64: log alpha piecewise linear in t_i = (i + 1) / N."""

    def __init__(self, acp):
        self.n = len(acp)
        self.grid = np.linspace(0.0, 1.0, self.n + 1)[1:]
        self.la = 0.5 * np.log(acp.double().numpy())

    def alpha(self, t):
        return math.exp(np.interp(t, self.grid, self.la))

    def sigma(self, t):
        return math.sqrt(1 - self.alpha(t) ** 2)

    def lam(self, t):
        return math.log(self.alpha(t) / self.sigma(t))

    def times(self, skip, steps):
        t_T, t_0 = 1.0, 1.0 / self.n
        if skip == "time_quadratic":
            return list(np.linspace(t_T**0.5, t_0**0.5, steps + 1) ** 2)
        if skip == "logSNR":  # uniform in lambda, back to t through log alpha = -log(1 + e^(-2 lambda)) / 2
            lams = np.linspace(self.lam(t_T), self.lam(t_0), steps + 1)
            return [float(np.interp(-0.5 * np.logaddexp(0, -2 * v), self.la[::-1], self.grid[::-1])) for v in lams]
        return list(np.linspace(t_T, t_0, steps + 1))


def ref_step(s, x, hist, t, order, variant, corrector, data):
    """One multistep UniPC step of the reference from hist[-1] = (t_0, x0 prediction) to t."""
    (t0, m0), h = hist[-1], s.lam(t) - s.lam(hist[-1][0])
    r = [(s.lam(hist[-(i + 1)][0]) - s.lam(t0)) / h for i in range(1, order)]
    d = [(hist[-(i + 1)][1] - m0) / r[i - 1] for i in range(1, order)]
    r.append(1.0)
    hh, a_t = -h, s.alpha(t)
    base = s.sigma(t) / s.sigma(t0) * x - a_t * math.expm1(hh) * m0
    if variant == "vary_coeff":  # C_ik = r_i^k / (k + 1)!, phi_{k+1} = phi_k / hh - 1 / k!
        k_all = len(r)
        c = np.array([[ri**k / math.factorial(k + 1) for k in range(k_all)] for ri in r])
        phi = [math.expm1(hh)]
        for k in range(1, k_all + 1):
            phi.append(phi[-1] / hh - 1 / math.factorial(k))
        a_p = np.linalg.inv(c[:-1, :-1]) if d else None
        x_t = base - a_t * sum(phi[k + 1] * sum(a_p[k][i] * d[i] for i in range(len(d))) for k in range(k_all - 1))
        if not corrector:
            return x_t, None
        m_t, a_c = data(x_t, t), np.linalg.inv(c)
        x_c = base - a_t * sum(phi[k + 1] * sum(a_c[k][i] * d[i] for i in range(len(d))) for k in range(k_all - 1))
        return x_c - a_t * phi[k_all] * a_c[max(k_all - 2, 0)][-1] * (m_t - m0), m_t
    # B(h): rho solves R rho = b, R_ik = r_k^i, b_i = (i+1)! phi_{i+2}(hh) / B(h); order 2's predictor 0.5
    b_h = hh if variant == "bh1" else math.expm1(hh)
    phis, b = [math.expm1(hh) / hh - 1], []
    for i in range(1, order + 1):
        b.append(phis[-1] * math.factorial(i) / b_h)
        phis.append(phis[-1] / hh - 1 / math.factorial(i + 1))
    rr = np.array([[ri ** (i - 1) for ri in r] for i in range(1, order + 1)])
    rho_p = [0.5] if order == 2 else (np.linalg.solve(rr[:-1, :-1], b[:-1]) if d else [])
    x_t = base - a_t * b_h * sum(p * di for p, di in zip(rho_p, d))
    if not corrector:
        return x_t, None
    rho_c, m_t = [0.5] if order == 1 else np.linalg.solve(rr, b), data(x_t, t)
    return base - a_t * b_h * (sum(p * di for p, di in zip(rho_c[:-1], d)) + rho_c[-1] * (m_t - m0)), m_t


def ref_unipc(eps, x, acp, steps, variant="bh1", skip="time_uniform", order=3, lower_final=True):
    """The reference's multistep sampler (data prediction): `order` - 1 warm-up steps of rising order,
    then `order` (lower at the end with lower_final), no corrector on the last step."""
    s = Schedule(acp)
    x = x.double()

    def data(x, t):
        return (x - s.sigma(t) * eps(x.float(), (t - 1 / s.n) * 1000).double()) / s.alpha(t)

    ts = s.times(skip, steps)
    hist = [(ts[0], data(x, ts[0]))]
    for step in range(1, steps + 1):
        k = step if step < order else (min(order, steps + 1 - step) if lower_final else order)
        x, m = ref_step(s, x, hist, ts[step], k, variant, step < order or step < steps, data)
        hist = [*hist, (ts[step], m if m is not None else data(x, ts[step]))][-order:]
    return x.float()


ACP = a1111.alphas_cumprod(BETAS)
X = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "variant,skip,order,lower_final",
    [
        ("vary_coeff", "time_uniform", 3, True),
        ("vary_coeff", "logSNR", 2, False),
        ("vary_coeff", "time_quadratic", 1, True),
        ("bh1", "logSNR", 3, True),
        ("bh2", "time_quadratic", 3, False),
        ("vary_coeff", "logSNR", 4, True),
    ],
)
def test_unipc_settings_match_the_reference(variant, skip, order, lower_final):
    kw = dict(variant=variant, skip=skip, order=order, lower_final=lower_final)
    got = unipc(_Plain(fake_eps), X, torch.zeros(7), ACP, None, **kw)
    want = ref_unipc(fake_eps, X, ACP, 7, variant, skip, order, lower_final)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_logsnr_times_are_uniform_in_half_log_snr():
    vp = VPTime(ACP)
    from latentdiff.sampling.a1111_unipc import _times

    ts = _times(vp, "logSNR", 1.0, 1 / 1000, 6)
    lams = torch.stack([vp.lam(t) for t in ts])
    assert torch.allclose(lams, torch.linspace(lams[0].item(), lams[-1].item(), 7), atol=1e-4)
    assert abs(ts[0].item() - 1.0) < 1e-5 and abs(ts[-1].item() - 1e-3) < 1e-5


def test_the_variants_converge_to_one_solution():
    """bh1, bh2 and vary_coeff solve one ODE: their gap shrinks as the steps grow. bh1 and bh2 are of
    order 3; A1111's vary_coeff (the reference's) only about of order 1: its corrector weighs the new
    point's difference by one term of the inverse's row, not the whole row, which we keep as it is."""

    def gaps(steps):
        out = {v: unipc(_Plain(fake_eps), X, torch.zeros(steps), ACP, None, variant=v) for v in ("bh1", "vary_coeff")}
        bh2 = unipc(_Plain(fake_eps), X, torch.zeros(steps), ACP, None, variant="bh2")
        return {v: (z - bh2).abs().max().item() for v, z in out.items()}

    few, many = gaps(10), gaps(80)
    assert many["bh1"] < few["bh1"] / 100 and many["bh1"] < 1e-3, (few, many)
    assert many["vary_coeff"] < few["vary_coeff"] / 2, (few, many)


def test_settings_reach_a1111s_unipc_and_the_infotext(pipe_sd1):
    eps, acp, _ = _cfg_eps(pipe_sd1, 1)
    f = pipe_sd1.scale_factor
    source = Generators([3], (4, SIZE // f, SIZE // f), "cpu")
    with torch.no_grad():
        z = unipc(_Plain(eps), source.first, a1111_timesteps.timesteps(STEPS), acp, None,
                  variant="vary_coeff", skip="logSNR", order=2, lower_final=False)  # fmt: skip
    kw = dict(uni_pc_variant="vary_coeff", uni_pc_skip_type="logSNR", uni_pc_order=2, uni_pc_lower_order_final=False)
    assert close(ours(pipe_sd1, "unipc", 3, rng="cpu", **kw), pixels(pipe_sd1, z))
    # a setting alone selects A1111's path, as its noise options do (the CPU's noise)
    image = pipe_sd1("x", steps=3, width=SIZE, height=SIZE, scheduler="unipc", uni_pc_variant="bh2", seed=1)[0]
    assert "UniPC variant: bh2" in image.info["parameters"]
    cpu = pipe_sd1("x", steps=3, width=SIZE, height=SIZE, scheduler="unipc", uni_pc_variant="bh2", seed=1, rng="cpu")[0]
    assert np.array_equal(np.asarray(image), np.asarray(cpu))


def test_a1111_pngs_and_the_command_line_carry_them():
    from latentdiff.cli.main import build_parser
    from latentdiff.config.generate import GenerateConfig
    from latentdiff.images.a1111_read import params_from_a1111

    text = "fox\nSteps: 4, Sampler: UniPC, CFG scale: 6, Seed: 3, Size: 64x64, RNG: CPU, UniPC variant: vary_coeff, "
    params, notes = params_from_a1111(text + "UniPC skip type: logSNR, UniPC order: 2, UniPC lower order final: False")
    assert {k: params[k] for k in ("uni_pc_variant", "uni_pc_skip_type", "uni_pc_order")} == {
        "uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "logSNR", "uni_pc_order": 2
    }  # fmt: skip
    assert params["uni_pc_lower_order_final"] is False and not any("UniPC" in n for n in notes)
    flags = ["x", "--uni-pc-variant", "bh2", "--uni-pc-order", "2", "--uni-pc-lower-order-final", "false"]
    args = build_parser().parse_args(["generate", *flags])
    cfg, _ = GenerateConfig.from_flags(vars(args))
    assert cfg.a1111_noise == {"uni_pc_variant": "bh2", "uni_pc_order": 2, "uni_pc_lower_order_final": False}


@pytest.mark.parametrize(
    "kw,says",
    [
        ({"uni_pc_variant": "bh2", "scheduler": "ddpm"}, "runs A1111's own samplers; DDPM is none of them"),
        ({"uni_pc_order": 2, "scheduler": "euler_a", "rng": "cpu"}, "setting of A1111's UniPC; not of Euler a"),
        ({"uni_pc_variant": "bh3", "scheduler": "unipc", "rng": "cpu"}, "uni_pc_variant must be one of"),
        ({"uni_pc_skip_type": "logsnr", "scheduler": "unipc", "rng": "cpu"}, "uni_pc_skip_type must be one of"),
        ({"uni_pc_order": True, "scheduler": "unipc", "rng": "cpu"}, "uni_pc_order must be a whole number"),
        ({"uni_pc_order": 9, "scheduler": "unipc", "rng": "cpu"}, "UniPC of order 9 needs at least 9 steps"),
        ({"uni_pc_lower_order_final": "no", "scheduler": "unipc", "rng": "cpu"}, "uni_pc_lower_order_final must be"),
    ],
)
def test_bad_settings_are_refused_in_one_line(pipe_sd1, kw, says):
    with pytest.raises(UsageError, match=says):
        pipe_sd1("x", steps=2, width=16, height=16, **kw)
