"""A1111's own sampling path (sampling/a1111.py, k_samplers.py) against what A1111 1.10 does, rebuilt
here with k-diffusion itself: its CompVisDenoiser around the UNet, its sigma functions, its `sample_*`
with torch.randn_like routed to each image's generator (A1111's TorchHijack) or its Brownian trees
seeded per image (A1111's create_noise_sampler), and A1111's CFG on the denoised predictions. Tiny
random SD1 model, 4 steps, pixels within 1/255."""

import contextlib

import numpy as np
import pytest
import torch

from latentdiff.images.write import to_pil
from latentdiff.sampling import k_samplers
from latentdiff.sampling.noise_a1111 import Philox, cuda_numbers_in_brownian_trees
from latentdiff.sampling.sampler_table import SAMPLERS
from tests.sampling.kdiffusion_ref import load

PROMPT, NEGATIVE, SIZE, STEPS, CFG = "a red fox", "blurry", 64, 4, 6.0
K_FUNCTIONS = {  # our key -> (k-diffusion function, its extra options)
    "euler": ("sample_euler", {}),
    "euler_a": ("sample_euler_ancestral", {}),
    "heun": ("sample_heun", {}),
    "lms": ("sample_lms", {}),
    "dpm2": ("sample_dpm_2", {}),
    "dpm2_a": ("sample_dpm_2_ancestral", {}),
    "dpm++2s_a": ("sample_dpmpp_2s_ancestral", {}),
    "dpm++2m": ("sample_dpmpp_2m", {}),
    "dpm++sde": ("sample_dpmpp_sde", {}),
    "dpm++2m_sde": ("sample_dpmpp_2m_sde", {}),
    "dpm++2m_sde_heun": ("sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    "dpm++3m_sde": ("sample_dpmpp_3m_sde", {}),
    "dpm_fast": ("sample_dpm_fast", {"eta": 1.0}),  # A1111 gives them its ancestral eta, 1
    "dpm_adaptive": ("sample_dpm_adaptive", {"eta": 1.0}),
}
K_BOUNDED = ("dpm_fast", "dpm_adaptive")
DISCARD = {"dpm2", "dpm2_a", "dpm++3m_sde"}  # A1111's discard_next_to_last_sigma
BROWNIAN = {"dpm++sde", "dpm++2m_sde", "dpm++2m_sde_heun", "dpm++3m_sde"}


class LatentDiffusion:
    """What A1111's model_wrap wraps: the model's alphas_cumprod and apply_model(x, t, cond)."""

    def __init__(self, unet, config):
        betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()
        self.unet = unet

    def apply_model(self, x, t, cond):  # cond: families.clip.Embeddings (SDXL: pooled text, size ids)
        return self.unet(x, t, encoder_hidden_states=cond.hidden, added_cond_kwargs=cond.added or None).sample


class Generators:
    """A1111's ImageRNG for the plain case: image k's generator gives its first noise, then (or a
    generator of seed + ENSD gives) every torch.randn_like of the sampler."""

    def __init__(self, seeds, shape, rng="cpu", ensd=0):
        self.seeds, self.shape, self.rng = seeds, shape, rng
        self.gens = [self._make(s) for s in seeds]
        self.first = torch.stack([self._draw(g) for g in self.gens])
        if ensd:
            self.gens = [self._make(s + ensd) for s in seeds]

    def _make(self, seed):
        return Philox(seed) if self.rng == "nv" else torch.Generator().manual_seed(seed)

    def _draw(self, g):
        return g.randn(self.shape) if self.rng == "nv" else torch.randn(self.shape, generator=g)

    def randn_like(self, x):
        return torch.stack([self._draw(g) for g in self.gens])


class TorchHijack:
    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return self.source.randn_like if name == "randn_like" else getattr(torch, name)


def a1111_sigmas(ks, wrap, sampler, schedule, steps):
    steps += sampler in DISCARD
    lo, hi = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    schedule = SAMPLERS[sampler].automatic or "uniform" if schedule == "automatic" else schedule
    made = {
        "uniform": lambda: wrap.get_sigmas(steps),
        "karras": lambda: ks.get_sigmas_karras(steps, lo, hi),
        "exponential": lambda: ks.get_sigmas_exponential(steps, lo, hi),
        "polyexponential": lambda: ks.get_sigmas_polyexponential(steps, lo, hi),
    }[schedule]()
    return torch.cat([made[:-2], made[-1:]]) if sampler in DISCARD else made


@torch.no_grad()
def a1111_reference(pipe, sampler, seeds, schedule="automatic", rng="cpu", ensd=0, latents=False):
    """Pixels (uint8) of A1111's txt2img of PROMPT for `seeds` with k-diffusion (or its latents)."""
    ks, _ = load()
    wrap = k_wrap(pipe)
    sigmas = a1111_sigmas(ks, wrap, sampler, schedule, STEPS)
    f, c = pipe.scale_factor, pipe.components
    source = Generators(seeds, (c.vae.config.latent_channels, SIZE // f, SIZE // f), rng, ensd)
    z = k_run(pipe, wrap, sampler, seeds, source.first * sigmas[0], sigmas, sigmas, source, rng)
    return z if latents else np.stack([np.asarray(im) for im in to_pil(pipe.decode(z))])


def k_wrap(pipe):
    """k-diffusion's CompVis(V)Denoiser around the pipe's UNet."""
    _, external = load()
    c = pipe.components
    v = c.scheduler_config.get("prediction_type") == "v_prediction"
    return (external.CompVisVDenoiser if v else external.CompVisDenoiser)(LatentDiffusion(c.unet, c.scheduler_config))


@torch.no_grad()
def k_run(pipe, wrap, sampler, seeds, x, sigmas, sched, source, rng="cpu", size=SIZE):
    """k-diffusion's `sample_*` from `x` over `sched` (a tail of `sigmas` for img2img), as A1111 calls it."""
    ks, _ = load()
    n = len(seeds)
    cond, uncond = pipe.conditioning([PROMPT] * n, [NEGATIVE] * n, size, size, "plain", 1)

    def cfg_denoiser(x, sigma, cond, uncond, cond_scale):  # A1111: the conditional rows first
        out = wrap(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond.cat(uncond))
        denoised_c, denoised_u = out.chunk(2)
        return denoised_u + (denoised_c - denoised_u) * cond_scale

    name, extra = K_FUNCTIONS[sampler]
    args = {"cond": cond, "uncond": uncond, "cond_scale": CFG}
    # A1111 on an NVIDIA GPU grows the trees there, whatever its RNG setting: CUDA's numbers
    cuda_trees = cuda_numbers_in_brownian_trees() if rng != "gpu" else contextlib.nullcontext()
    saved, ks.torch = ks.torch, TorchHijack(source)
    try:
        with cuda_trees:
            if sampler in BROWNIAN:  # A1111's create_noise_sampler: the whole schedule's span
                tree = ks.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
                extra = {**extra, "noise_sampler": tree}
            if sampler in K_BOUNDED:  # DPM fast, adaptive: the model's sigma range, the schedule's in img2img
                lo, hi = (wrap.sigmas[0].item(), wrap.sigmas[-1].item()) if sched is sigmas else (sched[-2], sched[0])
                n = {"n": len(sched) - 1} if sampler == "dpm_fast" else {}
                return getattr(ks, name)(cfg_denoiser, x, lo, hi, extra_args=args, disable=True, **n, **extra)
            return getattr(ks, name)(cfg_denoiser, x, sched, extra_args=args, disable=True, **extra)
    finally:
        ks.torch = saved


def ours(pipe, sampler, seed, n=1, **kw):
    images = pipe(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=seed,
                  num_images=n, scheduler=sampler, prompt_syntax="plain", **kw)  # fmt: skip
    return np.stack([np.asarray(im) for im in images])


def close(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max() <= 1


FAST = ("euler_a", "dpm++2m", "dpm++2m_sde")  # the rest of the matrix is marked slow
# Restart has no k-diffusion function: test_a1111_img2img.py rebuilds it from k-diffusion's Heun
MATRIX = [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in sorted(K_FUNCTIONS)]


@pytest.mark.parametrize("sampler", MATRIX)
def test_sampler_matches_a1111_with_k_diffusion(pipe_sd1, sampler):
    assert close(ours(pipe_sd1, sampler, 11, 2, rng="cpu"), a1111_reference(pipe_sd1, sampler, [11, 12]))


@pytest.mark.parametrize("schedule", ["karras", "exponential", "polyexponential", "uniform"])
def test_schedule_matches_a1111_with_k_diffusion(pipe_sd1, schedule):
    want = a1111_reference(pipe_sd1, "euler_a", [4], schedule=schedule, rng="nv")
    assert close(ours(pipe_sd1, f"euler_a_{schedule}", 4, rng="nv"), want)


def test_ensd_reseeds_only_the_samplers_noise(pipe_sd1):
    want = a1111_reference(pipe_sd1, "euler_a", [4], rng="nv", ensd=31337)
    got = ours(pipe_sd1, "euler_a", 4, rng="nv", ensd=31337)
    assert close(got, want) and not close(got, ours(pipe_sd1, "euler_a", 4, rng="nv"))
    assert np.array_equal(ours(pipe_sd1, "euler", 4, ensd=31337), ours(pipe_sd1, "euler", 4, rng="cpu"))


@pytest.mark.parametrize("sampler", ["dpm++2m_sde", "euler_a"])
def test_a_batch_equals_its_seeds_alone(pipe_sd1, sampler):
    batch = ours(pipe_sd1, sampler, 20, 2, rng="nv")
    assert close(batch[1], ours(pipe_sd1, sampler, 21, rng="nv")[0])  # as A1111: equal up to batched float sums


def test_variation_and_resize_ends(pipe_sd1):
    plain = ours(pipe_sd1, "euler_a", 7, rng="cpu")
    assert np.array_equal(ours(pipe_sd1, "euler_a", 7, variation_seed=99, variation_strength=0.0), plain)
    assert np.array_equal(ours(pipe_sd1, "euler_a", 7, seed_resize_from=(SIZE, SIZE)), plain)
    assert not close(ours(pipe_sd1, "euler_a", 7, variation_seed=99, variation_strength=0.5), plain)
    assert not close(ours(pipe_sd1, "euler_a", 7, seed_resize_from="32x32"), plain)


@pytest.fixture(scope="module")
def other_pipes(tiny_sdxl, tiny_sd2):
    from latentdiff import Pipeline

    pipes = {name: Pipeline.from_pretrained(path, device="cpu", dtype="fp32") for name, path in
             (("sdxl", tiny_sdxl), ("sd2-v", tiny_sd2))}  # fmt: skip
    for p in pipes.values():
        p.progress = False
    return pipes


@pytest.mark.parametrize("model", ["sdxl", "sd2-v"])
@pytest.mark.parametrize("sampler", ["euler_a", pytest.param("dpm++2m_sde", marks=pytest.mark.slow)])
def test_sdxl_and_v_prediction_match_a1111_with_k_diffusion(other_pipes, model, sampler):
    pipe = other_pipes[model]
    if model == "sd2-v":
        assert pipe.components.scheduler_config["prediction_type"] == "v_prediction"
    assert close(ours(pipe, sampler, 3, 2, rng="nv"), a1111_reference(pipe, sampler, [3, 4], rng="nv"))


def test_sigma_lists_agree_with_the_other_implementations(pipe_sd1):
    """Each schedule type's sigmas against an implementation written apart: sampling/sigmas.py (numpy,
    diffusers' path), diffusers' own use_*_sigmas, k-diffusion's, and NVIDIA's published AYS list."""
    import diffusers

    from latentdiff.sampling import a1111, a1111_sigmas, sigmas

    ks, external = load()
    config = pipe_sd1.components.scheduler_config
    wrap = a1111.DiscreteDenoiser(a1111.alphas_cumprod(config))
    model = wrap.sigmas.numpy().astype(np.float64)
    for name in ("simple", "normal", "ddim", "kl_optimal", "polyexponential"):
        assert np.allclose(a1111.sigmas_for(name, 7, wrap), sigmas.FUNCTIONS[name](7, model), rtol=1e-4), name
    for name, flag in (
        ("karras", "use_karras_sigmas"),
        ("exponential", "use_exponential_sigmas"),
        ("beta", "use_beta_sigmas"),
    ):
        theirs = diffusers.EulerDiscreteScheduler.from_config({**config, flag: True})
        theirs.set_timesteps(7)
        assert np.allclose(a1111.sigmas_for(name, 7, wrap), theirs.sigmas, rtol=1e-4), name
    k_wrap = external.CompVisDenoiser(LatentDiffusion(None, config))
    assert torch.allclose(a1111.sigmas_for("uniform", 7, wrap), k_wrap.get_sigmas(7))
    # A1111 takes the published 11 sigmas as they are for 11 steps (and interpolates them otherwise)
    assert torch.allclose(a1111.sigmas_for("align_your_steps", 11, wrap)[:-1], torch.tensor(a1111_sigmas._AYS["sd1"]))
    assert len(a1111.sigmas_for("sgm_uniform", 7, wrap)) == 8 and a1111.sigmas_for("sgm_uniform", 7, wrap)[0] > 14


def test_the_callback_sees_each_step_and_can_stop_the_run(pipe_sd1):
    from latentdiff.errors import Cancelled

    seen = []
    ours(pipe_sd1, "heun", 1, rng="cpu", callback=lambda i, total, x: seen.append((i, total, tuple(x.shape))))
    assert [s[:2] for s in seen] == [(i, STEPS) for i in range(1, STEPS + 1)]

    def stop(i, total, x):
        if i == 2:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        ours(pipe_sd1, "euler_a", 1, rng="cpu", callback=stop)


@pytest.mark.gpu
def test_gpu_noise_equals_nv_on_a_cuda_device(tiny_sd1):
    """A1111's default source (torch's CUDA generator) and NV (its numbers computed here) give one image."""
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(tiny_sd1, device="cuda", dtype="fp32")
    pipe.progress = False
    for sampler, kw in (("euler_a", {}), ("dpm++2m_sde", {}), ("ddim", {"eta": 0.5})):  # DDIM: A1111's timesteps
        assert close(*(ours(pipe, sampler, 5, 2, rng=rng, ensd=31337, **kw) for rng in ("gpu", "nv")))


def test_nv_grows_the_brownian_trees_from_cudas_numbers(pipe_sd1):
    from torchsde._brownian import brownian_interval

    own = brownian_interval._randn
    with cuda_numbers_in_brownian_trees():
        assert torch.equal(brownian_interval._randn((2, 3), torch.float32, "cpu", 77), Philox(77).randn((2, 3)))
    assert brownian_interval._randn is own
    want = a1111_reference(pipe_sd1, "dpm++sde", [8], rng="nv")
    assert close(ours(pipe_sd1, "dpm++sde", 8, rng="nv"), want)
    assert not close(ours(pipe_sd1, "dpm++sde", 8, rng="cpu"), want)


def test_every_sampler_of_the_path_has_a_reference():
    assert set(k_samplers.SAMPLERS) == set(K_FUNCTIONS) | {"restart", "lcm"}  # test_a1111_img2img.py, _timesteps.py


@pytest.mark.parametrize("sampler", ["dpm_fast", "restart", "dpm_adaptive"])
def test_off_grid_samplers_report_progress_and_stop(pipe_sd1, sampler):
    """DPM fast, adaptive and Restart call the model between the schedule's sigmas: their progress is
    counted in calls, so a callback sees them advance (and the server can interrupt them)."""
    from latentdiff.errors import Cancelled

    seen = []
    ours(pipe_sd1, sampler, 1, rng="cpu", callback=lambda i, total, x: seen.append(i))
    assert seen == sorted(set(seen)) and seen[-1] == STEPS and len(seen) >= 2, seen

    def stop(i, total, x):
        if i == 1:
            raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        ours(pipe_sd1, sampler, 1, rng="cpu", callback=stop)
