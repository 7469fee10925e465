"""A1111 1.10's timestep samplers and LCM on its own path (sampling/a1111_timesteps.py, a1111_unipc.py,
a1111.LCMDenoiser) against A1111's algorithm rebuilt here: DDIM (eq. 12 of Song et al.) and PLMS (Liu et
al.'s pseudo improved Euler, then Adams-Bashforth) written from the papers over A1111's timesteps
(1, 1 + 1000 // n, ... run from the last down to the second) and its CFG on the eps, each first held to
diffusers' DDIMScheduler / PNDMScheduler where they coincide (A1111's n steps are diffusers' first n - 1
with "leading" spacing and offset 1); UniPC held to diffusers' UniPCMultistepScheduler where A1111's
continuous times fall on integer timesteps; LCM against k-diffusion's DiscreteEpsDDPMDenoiser as A1111's
LCM denoiser extends it. Tiny random SD1 model, 4 steps, pixels within 1/255."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.sampling import a1111, a1111_timesteps
from latentdiff.sampling.a1111_unipc import unipc
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_a1111_img2img import pixels
from tests.sampling.test_a1111_path import CFG, NEGATIVE, PROMPT, SIZE, STEPS, Generators, LatentDiffusion, close, ours

BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def fake_eps(x, t):
    """A cheap stand-in for a network: smooth in x and t."""
    return torch.tanh(x) * 0.5 + 0.1 * math.sin(float(t) / 100.0)


def ref_ddim(eps, x, ts, acp, eta=0.0, draw=None, uncond=None):
    """DDIM (Song et al. 2021, eq. 12) from ts[-1] down to ts[0]; `uncond`: CFG++'s direction."""
    desc = ts.flip(0).tolist()
    for t, t_prev in zip(desc[:-1], desc[1:]):
        a, ap = acp[t].double(), acp[t_prev].double()
        e = eps(x, t)
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
        s = eta * ((1 - ap) / (1 - a)).sqrt() * (1 - a / ap).sqrt()
        direction = e if uncond is None else uncond(x, t)
        x = (ap.sqrt() * x0 + (1 - ap - s**2).sqrt() * direction + (s * draw() if eta else 0)).float()
    return x


def ref_plms(eps, x, ts, acp):
    """PLMS (Liu et al. 2022): the first step averages eps here and at the DDIM point one step on; then
    Adams-Bashforth 2, 3, 4 over the eps at the real points."""
    desc, history = ts.flip(0).tolist(), []

    def move(x, e, t, t_prev):
        a, ap = acp[t].double(), acp[t_prev].double()
        return (ap.sqrt() * (x - (1 - a).sqrt() * e) / a.sqrt() + (1 - ap).sqrt() * e).float()

    for t, t_prev in zip(desc[:-1], desc[1:]):
        e = eps(x, t)
        if not history:
            use = (e + eps(move(x, e, t, t_prev), t_prev)) / 2
        elif len(history) == 1:
            use = (3 * e - history[-1]) / 2
        elif len(history) == 2:
            use = (23 * e - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            use = (55 * e - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history.append(e)
        x = move(x, use, t, t_prev)
    return x


def test_a1111_timesteps():
    assert a1111_timesteps.timesteps(4).tolist() == [1, 251, 501, 751]
    assert a1111_timesteps.timesteps(3).tolist() == [1, 334, 667, 999]  # clipped: 3 steps, 3 model calls
    assert len(a1111_timesteps.timesteps(20)) == 20 and a1111_timesteps.timesteps(20)[-1] == 951


@pytest.mark.parametrize("name", ["ddim", "pndm"])
def test_the_references_are_diffusers_first_steps(name):
    """A1111's n steps = the first n - 1 of diffusers' DDIM / PLMS with leading spacing and offset 1."""
    import diffusers

    acp, x = a1111.alphas_cumprod(BETAS), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ts = a1111_timesteps.timesteps(20)
    cls = diffusers.DDIMScheduler if name == "ddim" else diffusers.PNDMScheduler
    extra = {"clip_sample": False} if name == "ddim" else {"skip_prk_steps": True}
    s = cls(**BETAS, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False, **extra)
    s.set_timesteps(20)
    z = x
    for t in s.timesteps[: 19 if name == "ddim" else 20]:
        z = s.step(fake_eps(z, int(t)), t, z).prev_sample
    want = (ref_ddim if name == "ddim" else ref_plms)(fake_eps, x, ts, acp)
    assert torch.allclose(want, z, atol=2e-4), (want - z).abs().max()
    got = a1111_timesteps.SAMPLERS[name][0](_Plain(fake_eps), x, ts, acp, None)
    assert torch.allclose(got, want, atol=1e-5)


class _Plain:
    """A model of the samplers' signature over a plain eps function (no CFG)."""

    def __init__(self, eps):
        self.eps, self.uncond_eps = eps, None

    def __call__(self, x, t):
        self.uncond_eps = self.eps(x, t) * 0.5
        return self.eps(x, t)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_is_diffusers_where_its_times_are_integer(variant):
    """9 steps: A1111's continuous times 1 - k 0.111 ask the network at 999, 888, ..., 111 as diffusers'
    linspace spacing does, ending at alpha-bar_0 (diffusers' final sigma "sigma_min")."""
    import diffusers

    acp, x = a1111.alphas_cumprod(BETAS), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    s = diffusers.UniPCMultistepScheduler(**BETAS, solver_order=3, solver_type=variant, timestep_spacing="linspace",
                                          final_sigmas_type="sigma_min", lower_order_final=True)  # fmt: skip
    s.set_timesteps(9)
    z = x
    for t in s.timesteps:
        z = s.step(fake_eps(z, int(t)), t, z).prev_sample
    got = unipc(_Plain(lambda x, t: fake_eps(x, round(t))), x, torch.zeros(9), acp, None, variant=variant)
    assert torch.allclose(got, z, atol=2e-4), (got - z).abs().max()
    with pytest.raises(UsageError, match="at least 3 steps"):
        unipc(_Plain(fake_eps), x, torch.zeros(2), acp, None)


def _cfg_eps(pipe, n, v=False):
    """A1111's CFGDenoiserTimesteps over the UNet: both halves' eps at t, mixed by CFG (and the uncond's)."""
    c = pipe.components
    model = LatentDiffusion(c.unet, c.scheduler_config)
    cond, uncond = pipe.conditioning([PROMPT] * n, [NEGATIVE] * n, SIZE, SIZE, "plain", 1)
    last = {}

    def eps(x, t, scale=CFG):
        out = model.apply_model(torch.cat([x, x]), torch.full((2 * n,), float(t)), cond.cat(uncond))
        e_c, e_u = out.chunk(2)
        last["u"] = e_u
        return e_u + (e_c - e_u) * scale

    return eps, model.alphas_cumprod, last


SLOW = pytest.mark.slow  # their arithmetic is held to the references on a stand-in model above


@pytest.mark.parametrize("sampler,eta", [
    pytest.param("ddim", 0.0, marks=SLOW), ("ddim", 0.5), pytest.param("pndm", 0.0, marks=SLOW), ("ddim_cfg++", 0.0),
])  # fmt: skip
def test_timestep_samplers_match_a1111(pipe_sd1, sampler, eta):
    eps, acp, last = _cfg_eps(pipe_sd1, 2)
    f = pipe_sd1.scale_factor
    source = Generators([11, 12], (4, SIZE // f, SIZE // f), "cpu")
    ts = a1111_timesteps.timesteps(STEPS)
    with torch.no_grad():
        if sampler == "pndm":
            z = ref_plms(eps, source.first, ts, acp)
        elif sampler == "ddim":
            z = ref_ddim(eps, source.first, ts, acp, eta, lambda: source.randn_like(None))
        else:  # CFG++: guidance / 12.5, the step back along the unconditional eps
            z = ref_ddim(lambda x, t: eps(x, t, CFG / 12.5), source.first, ts, acp, uncond=lambda x, t: last["u"])
    kw = {"eta": eta} if eta else {}
    assert close(ours(pipe_sd1, sampler, 11, 2, rng="cpu", **kw), pixels(pipe_sd1, z))


def test_unipc_runs_a1111s_steps(pipe_sd1):
    """UniPC's wiring (its math is held to diffusers above): the unscaled noise, len(timesteps) steps."""
    eps, acp, _ = _cfg_eps(pipe_sd1, 1)
    f = pipe_sd1.scale_factor
    source = Generators([3], (4, SIZE // f, SIZE // f), "nv")
    with torch.no_grad():
        z = unipc(_Plain(eps), source.first, a1111_timesteps.timesteps(STEPS), acp, None)
    assert close(ours(pipe_sd1, "unipc", 3, rng="nv"), pixels(pipe_sd1, z))


def test_ddim_from_an_image_as_a1111(pipe_sd1):
    """A1111's sample_img2img for DDIM: the init noised to ts[t_enc] of the `steps` schedule, then ts[:t_enc]."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    vae = pipe_sd1.components.vae
    with torch.no_grad():
        init = vae.encode(torch.from_numpy(np.asarray(image) / 127.5 - 1).permute(2, 0, 1)[None].float())
        z0 = init.latent_dist.mean * vae.config.scaling_factor
        eps, acp, _ = _cfg_eps(pipe_sd1, 1)
        total, t_enc = a1111.img2img_steps(6, 0.6, fixed=False)
        ts = a1111_timesteps.timesteps(total)
        noise = Generators([9], tuple(z0.shape[1:]), "cpu").first
        a = acp[ts[t_enc]]
        z = ref_ddim(eps, z0 * a.sqrt() + noise * (1 - a).sqrt(), ts[:t_enc], acp)
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=6, guidance=CFG, width=SIZE, height=SIZE, seed=9,
                   scheduler="ddim", prompt_syntax="plain", rng="cpu", image=image, strength=0.6)  # fmt: skip
    assert close(np.stack([np.asarray(im) for im in got]), pixels(pipe_sd1, z))


def lcm_reference(pipe, seeds):
    """A1111's LCM: its LCMCompVisDenoiser (k-diffusion's DiscreteEpsDDPMDenoiser over the 50 original
    timesteps, LCM's boundary scalings), its get_sigmas, its sample_lcm; CFG on the denoised."""
    ks, external = load()
    c = pipe.components
    model = LatentDiffusion(c.unet, c.scheduler_config)

    class LCMDenoiser(external.DiscreteEpsDDPMDenoiser):
        def sigma_to_t(self, sigma, quantize=None):
            return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape) * 20 + 19

        def get_eps(self, x, t, cond):
            return self.inner_model.apply_model(x, t, cond)

        def forward(self, x, sigma, cond):
            c_in = 1 / (sigma**2 + 1) ** 0.5
            x0 = x - sigma[:, None, None, None] * self.get_eps(
                x * c_in[:, None, None, None], self.sigma_to_t(sigma), cond
            )
            st = self.sigma_to_t(sigma)[:, None, None, None] * 10.0
            return st / (st**2 + 0.25) ** 0.5 * x0 + 0.25 / (st**2 + 0.25) * x

    wrap = LCMDenoiser(model, model.alphas_cumprod[19::20], quantize=None)
    t = torch.linspace(999, 19, STEPS)
    sigmas = ks.append_zero(external.DiscreteSchedule.t_to_sigma(wrap, ((t - 19) / 20).clamp(0, 49)))
    n, f = len(seeds), pipe.scale_factor
    source = Generators(seeds, (4, SIZE // f, SIZE // f), "cpu")
    cond, uncond = pipe.conditioning([PROMPT] * n, [NEGATIVE] * n, SIZE, SIZE, "plain", 1)
    x = source.first * sigmas[0]
    with torch.no_grad():
        for i in range(STEPS):
            d_c, d_u = wrap(torch.cat([x, x]), sigmas[i].repeat(2 * n), cond.cat(uncond)).chunk(2)
            x = d_u + (d_c - d_u) * CFG
            if sigmas[i + 1] > 0:
                x = x + sigmas[i + 1] * source.randn_like(x)
    return pixels(pipe, x)


def test_lcm_matches_a1111(pipe_sd1):
    assert close(ours(pipe_sd1, "lcm", 5, 2, rng="cpu"), lcm_reference(pipe_sd1, [5, 6]))


@pytest.mark.parametrize("sampler,kw,match", [
    ("ddim", {"schedule": "karras"}, "takes schedule type Automatic"),
    ("lcm", {"schedule": "sgm_uniform"}, "LCM takes schedule type"),
    ("pndm", {"eta": 0.3}, "eta applies to the samplers"),
])  # fmt: skip
def test_what_the_timestep_path_refuses_is_one_line(pipe_sd1, sampler, kw, match):
    with pytest.raises(UsageError, match=match):
        ours(pipe_sd1, sampler, 1, rng="cpu", **kw)
