"""A1111's SDXL refiner on its own path: the sampler goes on while, from the first model call whose
sigma's nearest training step t has (999 - t) / 1000 >= "Refiner switch at", the refiner's network and
prompts (its aesthetic-score conditioning) answer (A1111 1.10's apply_refiner, read for behaviour),
rebuilt here around k-diffusion's `sample_*`. Tiny random SDXL base and refiner, pixels within 1/255."""

import numpy as np
import pytest
import torch

from latentdiff.images.write import to_pil
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_a1111_path import CFG, NEGATIVE, PROMPT, SIZE, STEPS, Generators, a1111_sigmas, close, k_wrap

K_NAMES = {"euler_a": "sample_euler_ancestral", "dpm++2m": "sample_dpmpp_2m"}


@pytest.fixture(scope="module")
def pair(tiny_sdxl, tiny_refiner):
    from latentdiff import Pipeline

    base, refiner = (Pipeline.from_pretrained(p, device="cpu", dtype="fp32") for p in (tiny_sdxl, tiny_refiner))
    for p in (base, refiner):
        p.progress = False
    return base, refiner


@torch.no_grad()
def reference(base, refiner, sampler, seeds, at):
    ks, _ = load()
    wraps = {id(base): k_wrap(base), id(refiner): k_wrap(refiner)}
    wrap = wraps[id(base)]
    sigmas = a1111_sigmas(ks, wrap, sampler, "automatic", STEPS)
    source = Generators(seeds, (4, SIZE // base.scale_factor, SIZE // base.scale_factor), "nv")
    n = len(seeds)
    conds = {id(m): m.conditioning([PROMPT] * n, [NEGATIVE] * n, SIZE, SIZE, "plain", 1) for m in (base, refiner)}
    state = {"model": base}

    def denoiser(x, sigma, **_):
        t = int(torch.argmin(torch.abs(wrap.sigmas - sigma.max())))
        if (999 - t) / 1000 >= at:
            state["model"] = refiner
        key = id(state["model"])
        cond, uncond = conds[key]
        out = wraps[key](torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond.cat(uncond))
        denoised_c, denoised_u = out.chunk(2)
        return denoised_u + (denoised_c - denoised_u) * CFG

    x = source.first * sigmas[0]
    noise = {"noise_sampler": lambda s, s_next: source.randn_like(x)} if sampler == "euler_a" else {}
    z = getattr(ks, K_NAMES[sampler])(denoiser, x, sigmas, disable=True, **noise)
    assert state["model"] is refiner
    return np.stack([np.asarray(im) for im in to_pil(refiner.decode(z))])


def ours(base, refiner, sampler, seed, n, at):
    if at is not None:
        base.set_refiner(refiner, at)
    try:
        images = base(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=seed,
                      num_images=n, scheduler=sampler, prompt_syntax="plain", rng="nv")  # fmt: skip
    finally:
        base.refiner = None
    if at is not None:  # A1111's infotext names the refiner and where it took over
        assert (
            f"Refiner switch at: {at}" in images[0].info["parameters"] and "Refiner: " in images[0].info["parameters"]
        )
    return np.stack([np.asarray(im) for im in images])


@pytest.mark.parametrize("sampler, at", [("euler_a", 0.5), pytest.param("dpm++2m", 0.8, marks=pytest.mark.slow)])
def test_refiner_switch_matches_a1111(pair, sampler, at):
    base, refiner = pair
    got = ours(base, refiner, sampler, 3, 2, at)
    assert close(got, reference(base, refiner, sampler, [3, 4], at))
    assert not close(got, ours(base, refiner, sampler, 3, 2, None))  # the base alone
