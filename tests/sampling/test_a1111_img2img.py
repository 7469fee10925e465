"""A1111's own path from an image: the hires fix with its "Latent" upscaler and img2img, against
A1111 1.10's sample_hr_pass / sample_img2img rebuilt with k-diffusion (tests/sampling/test_a1111_path.py's
reference): the first pass's latents upscaled bilinearly without antialiasing, fresh per-image noise at
the new size from the same seeds, a schedule of steps / strength of which the hires pass runs `steps`
(setup_img2img_steps with explicit steps), the img2img tab's int(strength * steps) + 1 of `steps`, the
Brownian trees spanning the whole schedule. Tiny random SD1 model, pixels within 1/255."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.images.write import to_pil
from latentdiff.sampling.a1111 import img2img_steps
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_a1111_path import (
    CFG,
    NEGATIVE,
    PROMPT,
    SIZE,
    STEPS,
    Generators,
    a1111_reference,
    a1111_sigmas,
    close,
    k_run,
    k_wrap,
)


def pixels(pipe, z):
    return np.stack([np.asarray(im) for im in to_pil(pipe.decode(z))])


def a1111_from(pipe, sampler, seeds, init, steps, strength, fixed, rng="nv"):
    """A1111's sample_img2img from latents `init`, its noise drawn fresh from `seeds` at their size."""
    ks, _ = load()
    wrap = k_wrap(pipe)
    total, t_enc = img2img_steps(steps, strength, fixed)
    sigmas = a1111_sigmas(ks, wrap, sampler, "automatic", total)
    sched = sigmas[total - t_enc - 1 :]
    source = Generators(seeds, tuple(init.shape[1:]), rng)
    x = init + source.first * sched[0]
    return k_run(pipe, wrap, sampler, seeds, x, sigmas, sched, source, rng, size=init.shape[-1] * pipe.scale_factor)


def test_setup_img2img_steps_as_a1111():
    assert img2img_steps(20, 0.5, fixed=False) == (20, 10) and img2img_steps(20, 1.0, False) == (20, 19)
    assert img2img_steps(10, 0.5, fixed=True) == (20, 9) and img2img_steps(10, 0.3, True) == (33, 9)


@pytest.mark.parametrize("sampler", ["euler_a", "dpm++2m_sde"])
def test_hires_fix_with_the_latent_upscaler_matches_a1111(pipe_sd1, sampler):
    first = a1111_reference(pipe_sd1, sampler, [5], rng="nv", latents=True)
    up = F.interpolate(first, scale_factor=2, mode="bilinear", antialias=False)
    want = pixels(pipe_sd1, a1111_from(pipe_sd1, sampler, [5], up, 3, 0.5, fixed=True))
    # our hires_steps is the schedule diffusers' path runs int(steps * strength) of: 6 -> A1111's 3
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=5,
                   scheduler=sampler, prompt_syntax="plain", rng="nv", hires=2.0, hires_strength=0.5, hires_steps=6)  # fmt: skip
    assert close(np.stack([np.asarray(im) for im in got]), want)


@pytest.mark.parametrize("sampler", ["euler_a", "dpm_fast"])  # DPM fast: the schedule's sigma range
def test_img2img_matches_a1111(pipe_sd1, sampler):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    vae = pipe_sd1.components.vae
    with torch.no_grad():
        init = vae.encode(torch.from_numpy(np.asarray(image) / 127.5 - 1).permute(2, 0, 1)[None].float())
    z0 = init.latent_dist.mean * vae.config.scaling_factor
    want = pixels(
        pipe_sd1, a1111_from(pipe_sd1, sampler, [9, 10], z0.repeat(2, 1, 1, 1), 6, 0.6, fixed=False, rng="cpu")
    )
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=6, guidance=CFG, width=SIZE, height=SIZE, seed=9, num_images=2,
                   scheduler=sampler, prompt_syntax="plain", rng="cpu", image=image, strength=0.6)  # fmt: skip
    assert close(np.stack([np.asarray(im) for im in got]), want)
