"""ComfyUI's own KSampler path (sampling/comfy.py, workflows/comfy_path.py) against ComfyUI's 2026 code's rules
rebuilt here with k-diffusion's own `sample_*`: ComfyUI's model sampling (float64 betas, the network
called at the NEAREST training timestep), its first noise (prepare_noise: one CPU draw for the batch
latent) scaled by sqrt(1 + sigma_max^2), its default noise sampler (one generator for the whole batch,
seed + 1 on a CPU, CUDA's numbers of the seed on an NVIDIA GPU), one Brownian tree of the seed for the
batch, and CFG on the denoised predictions. Its schedulers against formulas written from ComfyUI's
code apart from ours. Tiny random SD1 model, pixels within 1/255."""

import math

import numpy as np
import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.images.write import to_pil
from latentdiff.sampling import comfy
from latentdiff.sampling.noise_a1111 import Philox
from tests.sampling.kdiffusion_ref import load

PROMPT, NEGATIVE, SIZE, STEPS, CFG, SEED = "a red fox", "blurry", 64, 4, 6.0, 5
K_FUNCTIONS = {  # ComfyUI name -> k-diffusion function and options
    "euler": ("sample_euler", {}),
    "euler_ancestral": ("sample_euler_ancestral", {}),
    "heun": ("sample_heun", {}),
    "dpm_2": ("sample_dpm_2", {}),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", {}),
    "lms": ("sample_lms", {}),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {}),
    "dpmpp_2m": ("sample_dpmpp_2m", {}),
    "dpmpp_sde": ("sample_dpmpp_sde", {}),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {}),
    "dpmpp_2m_sde_heun": ("sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {}),
}
BROWNIAN = ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde")


class Sampling:
    """ComfyUI's ModelSamplingDiscrete for SD1 (its 'linear' betas are diffusers' scaled_linear)."""

    def __init__(self, config):
        betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
        acp = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - acp) / acp) ** 0.5
        self.sigmas, self.log_sigmas = sigmas.float(), sigmas.log().float()

    def timestep(self, sigma):
        return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, t):
        t = torch.clamp(t.float(), 0, len(self.sigmas) - 1)
        lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()


def normal(s, n):  # ComfyUI's normal_scheduler (append_zero: SD's smallest sigma is not ~0)
    start, end = s.timestep(s.sigmas[-1]), s.timestep(s.sigmas[0])
    return torch.FloatTensor([float(s.sigma(t)) for t in torch.linspace(start, end, n)] + [0.0])


def reference_sigmas(s, scheduler, n):
    ks, _ = load()
    lo, hi = float(s.sigmas[0]), float(s.sigmas[-1])
    if scheduler == "karras":
        return ks.get_sigmas_karras(n, lo, hi)
    if scheduler == "exponential":
        return ks.get_sigmas_exponential(n, lo, hi)
    if scheduler == "simple":
        return torch.FloatTensor([float(s.sigmas[-(1 + int(x * len(s.sigmas) / n))]) for x in range(n)] + [0.0])
    if scheduler == "sgm_uniform":
        ts = torch.linspace(s.timestep(s.sigmas[-1]), s.timestep(s.sigmas[0]), n + 1)[:-1]
        return torch.FloatTensor([float(s.sigma(t)) for t in ts] + [0.0])
    return normal(s, n)


@torch.no_grad()
def comfy_reference(pipe, sampler, scheduler, batch=2, device="cpu", prompt=PROMPT, negative=NEGATIVE, **kw):
    """Pixels (uint8) of ComfyUI's KSampler txt2img of `prompt`, batch `batch`, rebuilt with k-diffusion
    (`kw`: steps, cfg, seed, size other than the module's)."""
    ks, _ = load()
    steps, cfg, seed, size = (kw.get(k, d) for k, d in (("steps", STEPS), ("cfg", CFG), ("seed", SEED), ("size", SIZE)))
    c = pipe.components
    s = Sampling(c.scheduler_config)
    extra = int(sampler in ("dpm_2", "dpm_2_ancestral"))
    sigmas = reference_sigmas(s, scheduler, steps + extra)
    sigmas = torch.cat([sigmas[:-2], sigmas[-1:]]) if extra else sigmas
    side = size // pipe.scale_factor
    with torch.random.fork_rng(devices=[]):
        noise = torch.randn((batch, 4, side, side), generator=torch.manual_seed(seed), device="cpu")
    x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)  # the model's full sigma: ComfyUI's max_denoise
    cond, uncond = pipe.conditioning([prompt] * batch, [negative] * batch, size, size, kw.get("syntax", "plain"), 1)
    both = cond.cat(uncond)

    def model(x, sigma, **_):
        t = s.timestep(sigma).float()  # ComfyUI: the nearest training step
        c_in = 1 / (sigma**2 + 1) ** 0.5
        rows = torch.cat([x, x])
        eps = c.unet(
            rows * c_in[:, None, None, None].repeat(2, 1, 1, 1), t.repeat(2), encoder_hidden_states=both.hidden
        ).sample
        denoised_c, denoised_u = (rows - eps * sigma.repeat(2)[:, None, None, None]).chunk(2)
        return denoised_u + (denoised_c - denoised_u) * cfg

    name, options = K_FUNCTIONS[sampler]
    if sampler in BROWNIAN:
        options = {
            **options,
            "noise_sampler": ks.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed),
        }
    elif "ancestral" in sampler:
        if device == "nv":
            source = Philox(seed)
            options = {**options, "noise_sampler": lambda a, b: source.randn(x.shape)}
        else:
            g = torch.Generator().manual_seed(seed + 1)  # ComfyUI after 0.3.64: seed + 1 on a CPU
            options = {**options, "noise_sampler": lambda a, b: torch.randn(x.shape, generator=g)}
    z = getattr(ks, name)(model, x, sigmas, disable=True, **options)
    return np.stack([np.asarray(im) for im in to_pil(pipe.decode(z))])


def ours(pipe, sampler, scheduler, batch=2, noise="comfy", **kw):
    images = pipe(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=SEED,
                  num_images=batch, scheduler=f"{sampler} {scheduler}", prompt_syntax="plain", noise=noise, **kw)  # fmt: skip
    return np.stack([np.asarray(im) for im in images])


def close(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max() <= 1


FAST = ("euler_ancestral", "dpmpp_2m_sde")
MATRIX = [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in sorted(K_FUNCTIONS)]


@pytest.mark.parametrize("sampler", MATRIX)
def test_sampler_matches_comfyui_rebuilt_with_k_diffusion(pipe_sd1, sampler):
    assert close(ours(pipe_sd1, sampler, "normal"), comfy_reference(pipe_sd1, sampler, "normal"))


@pytest.mark.parametrize(
    "scheduler",
    ["karras", *(pytest.param(s, marks=pytest.mark.slow) for s in ("exponential", "simple", "sgm_uniform"))],
)
def test_scheduler_matches_comfyui(pipe_sd1, scheduler):
    assert close(ours(pipe_sd1, "euler", scheduler, 1), comfy_reference(pipe_sd1, "euler", scheduler, 1))


def test_ancestral_noise_as_comfyui_on_an_nvidia_gpu(pipe_sd1):
    want = comfy_reference(pipe_sd1, "euler_ancestral", "normal", device="nv")
    got = ours(pipe_sd1, "euler_ancestral", "normal", noise="comfy_nv")
    assert close(got, want) and not close(got, ours(pipe_sd1, "euler_ancestral", "normal"))


def test_a_row_replayed_alone_is_its_row_of_the_batch(pipe_sd1):
    batch = ours(pipe_sd1, "euler_ancestral", "normal")
    alone = ours(pipe_sd1, "euler_ancestral", "normal", batch=1, noise_batch=2, noise_index=1)
    assert close(alone[0], batch[1])


def test_the_nearest_timestep_is_what_differs_from_a1111(pipe_sd1):
    """The same sigmas and first noise on A1111's path (interpolated timesteps) give other latents."""
    s = comfy.ComfyModelSampling(pipe_sd1.components.scheduler_config)
    sigma = torch.tensor([3.0])
    assert float(s.sigma_to_t(sigma)) == round(float(s.sigma_to_t(sigma)))
    from latentdiff.sampling.a1111 import DiscreteDenoiser, alphas_cumprod

    interpolated = float(DiscreteDenoiser(alphas_cumprod(pipe_sd1.components.scheduler_config)).sigma_to_t(sigma))
    assert abs(float(s.sigma_to_t(sigma)) - interpolated) <= 0.5 and interpolated != round(interpolated)


def test_own_schedules_against_comfyuis_formulas(pipe_sd1):
    """beta, linear_quadratic and kl_optimal, which ComfyUI makes otherwise than A1111, from formulas
    written here from ComfyUI's code; a partial denoise and the advanced node's cuts."""
    from scipy import stats

    s = comfy.ComfyModelSampling(pipe_sd1.components.scheduler_config)
    n = 7
    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), 0.6, 0.6) * 999)
    beta = [float(s.sigmas[int(t)]) for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]] + [0.0]
    assert torch.allclose(comfy.schedule(s, "beta", n), torch.FloatTensor(beta))
    idx = torch.arange(n, dtype=torch.float) / (n - 1)
    lo, hi = float(s.sigmas[0]), float(s.sigmas[-1])
    kl = torch.cat([(idx * math.atan(lo) + (1 - idx) * math.atan(hi)).tan(), torch.zeros(1)])
    assert torch.allclose(comfy.schedule(s, "kl_optimal", n), kl)
    lq = comfy.schedule(s, "linear_quadratic", n)
    assert len(lq) == n + 1 and float(lq[0]) == pytest.approx(hi) and float(lq[-1]) == 0.0
    assert float(lq[n // 2]) == pytest.approx(hi * (1 - 0.025), rel=1e-5)  # the linear part ends at 0.025
    full = comfy.ksampler_sigmas(s, "euler", "karras", 10)
    assert torch.equal(comfy.ksampler_sigmas(s, "euler", "karras", 5, denoise=0.5), full[-6:])
    assert len(comfy.ksampler_sigmas(s, "dpm_2", "karras", 5)) == 6
    cut = comfy.advanced(full, 2, 6, force_full_denoise=True)
    assert len(cut) == 5 and float(cut[-1]) == 0.0 and torch.equal(cut[:-1], full[2:6])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheduler": "euler_a", "noise": "comfy", "eta": 0.5}, "takes no sampler options"),
        ({"scheduler": "euler_a_polyexponential", "noise": "comfy"}, "no scheduler 'polyexponential'"),
        ({"scheduler": "tcd", "noise": "comfy_nv"}, "runs on ComfyUI's own path"),
    ],
)
def test_what_comfyuis_path_cannot_run_is_one_error(pipe_sd1, kwargs, message):
    with pytest.raises(UsageError, match=message):
        pipe_sd1("x", steps=1, width=64, height=64, **kwargs)
