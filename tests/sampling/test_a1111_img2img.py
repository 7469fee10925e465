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


@pytest.mark.parametrize(
    "sampler, upscaler",
    [
        ("euler_a", "latent"),
        ("dpm++2m_sde", "latent"),
        ("euler_a", "latent-bicubic-antialiased"),
        ("euler_a", "latent-nearest-exact"),
    ],
)
def test_hires_fix_with_the_latent_upscalers_matches_a1111(pipe_sd1, sampler, upscaler):
    """A1111's latent upscale modes (its shared.latent_upscale_modes, torch's interpolate as it calls it)."""
    mode, antialias = {"latent": ("bilinear", False), "latent-bicubic-antialiased": ("bicubic", True)}.get(
        upscaler, ("nearest-exact", False)
    )
    first = a1111_reference(pipe_sd1, sampler, [5], rng="nv", latents=True)
    up = F.interpolate(first, scale_factor=2, mode=mode, antialias=antialias)
    want = pixels(pipe_sd1, a1111_from(pipe_sd1, sampler, [5], up, 3, 0.5, fixed=True))
    # our hires_steps is the schedule diffusers' path runs int(steps * strength) of: 6 -> A1111's 3
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=5, scheduler=sampler,
                   prompt_syntax="plain", rng="nv", hires=2.0, hires_strength=0.5, hires_steps=6, hires_upscaler=upscaler)  # fmt: skip
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


def restart_reference(pipe, seed, steps):
    """A1111's Restart rebuilt from k-diffusion's sample_heun run segment by segment: the Karras schedule
    of steps - 9 (from 20 steps), Heun down to the sigma nearest 0.1, fresh noise up to the sigma nearest
    2, Heun down a 10-sigma Karras schedule between the two (its 0 left out), then on to the end."""
    ks, _ = load()
    wrap = k_wrap(pipe)
    sigmas = a1111_sigmas(ks, wrap, "heun", "karras", steps)
    source = Generators([seed], (4, SIZE // pipe.scale_factor, SIZE // pipe.scale_factor), "nv")
    x = source.first * sigmas[0]
    if steps < 20:
        return k_run(pipe, wrap, "heun", [seed], x, sigmas, sigmas, source, "nv")
    sigmas = ks.get_sigmas_karras(steps - 9, sigmas[-2].item(), sigmas[0].item())
    low, top = int((sigmas - 0.1).abs().argmin()), int((sigmas - 2).abs().argmin())
    back = ks.get_sigmas_karras(10, sigmas[low].item(), sigmas[top].item())[:-1]
    # k-diffusion's sample_heun draws (and, without churn, drops) noise each step; A1111's Restart's own
    # Heun steps draw none: the segments get a generator of their own
    spare = Generators([seed + 1], source.shape, "nv")
    x = k_run(pipe, wrap, "heun", [seed], x, sigmas, sigmas[: low + 1], spare, "nv")
    x = x + source.randn_like(x) * (back[0] ** 2 - sigmas[low] ** 2) ** 0.5
    x = k_run(pipe, wrap, "heun", [seed], x, sigmas, back, spare, "nv")
    if back[-1] < sigmas[low]:  # A1111 adds noise wherever a step starts above the last one's end
        x = x + source.randn_like(x) * (sigmas[low] ** 2 - back[-1] ** 2) ** 0.5
    return k_run(pipe, wrap, "heun", [seed], x, sigmas, sigmas[low:], spare, "nv")


@pytest.mark.parametrize("steps", [4, 20])  # Restart is Heun below 20 steps
def test_restart_matches_a1111(pipe_sd1, steps):
    want = pixels(pipe_sd1, restart_reference(pipe_sd1, 3, steps))
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=steps, guidance=CFG, width=SIZE, height=SIZE, seed=3,
                   scheduler="restart", prompt_syntax="plain", rng="nv")  # fmt: skip
    assert close(np.stack([np.asarray(im) for im in got]), want)
