"""A1111's SDXL refiner on its own path beyond text to image (A1111 1.10's apply_refiner, read for
behaviour): from an init image (img2img: the switch by the same rule, (999 - t) / 1000 >= "Refiner switch
at", inside sample_img2img's shorter schedule), with the hires fix (its default hires_fix_refiner_pass
"second pass": the first pass on the base alone, the hires pass conditioned at the target size and
switching inside it, the refiner decoding), and on a timestep sampler (DDIM: t itself, cut to a whole
number). Rebuilt around k-diffusion's `sample_*` and DDIM's formula on tiny random SDXL base and refiner;
pixels within 1/255."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.images.write import to_pil
from latentdiff.sampling import a1111_timesteps
from latentdiff.sampling.a1111 import img2img_steps
from latentdiff.sampling.noise_request import NoiseRequest
from latentdiff.workflows.a1111_path import check
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_a1111_path import (
    CFG,
    NEGATIVE,
    PROMPT,
    SIZE,
    Generators,
    LatentDiffusion,
    a1111_reference,
    a1111_sigmas,
    close,
    k_wrap,
)
from tests.sampling.test_a1111_refiner import pair  # noqa: F401 (the fixture)
from tests.sampling.test_a1111_timesteps import ref_ddim


class Switching:
    """A1111's CFG denoiser whose model becomes the refiner from the first call at or past `at`."""

    def __init__(self, base, refiner, at, size, n):
        self.models, self.at, self.current = (base, refiner), at, base
        self.conds = {
            id(m): m.conditioning([PROMPT] * n, [NEGATIVE] * n, size, size, "plain", 1) for m in (base, refiner)
        }
        self.wraps = {id(m): k_wrap(m) for m in (base, refiner)}

    def at_step(self, t: int):
        if (999 - t) / 1000 >= self.at:
            self.current = self.models[1]
        return id(self.current)

    def denoised(self, x, sigma, **_):
        key = self.at_step(int(torch.argmin(torch.abs(self.wraps[id(self.models[0])].sigmas - sigma.max()))))
        cond, uncond = self.conds[key]
        c, u = self.wraps[key](torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond.cat(uncond)).chunk(2)
        return u + (c - u) * CFG

    def eps(self, x, t):
        key = self.at_step(int(t))
        cond, uncond = self.conds[key]
        m = self.current.components
        out = LatentDiffusion(m.unet, m.scheduler_config).apply_model(
            torch.cat([x, x]), torch.full((2 * len(x),), float(t)), cond.cat(uncond)
        )
        c, u = out.chunk(2)
        return u + (c - u) * CFG


def sample_from(sw, init, seeds, steps, strength, fixed):
    """A1111's sample_img2img with Euler a from latents `init`, its noise fresh from `seeds` (NV)."""
    ks, _ = load()
    total, t_enc = img2img_steps(steps, strength, fixed)
    sigmas = a1111_sigmas(ks, k_wrap(sw.models[0]), "euler_a", "automatic", total)
    sched = sigmas[total - t_enc - 1 :]
    source = Generators(seeds, tuple(init.shape[1:]), "nv")
    x = init + source.first * sched[0]
    with torch.no_grad():
        return ks.sample_euler_ancestral(
            sw.denoised, x, sched, disable=True, noise_sampler=lambda *_: source.randn_like(x)
        )


def decoded(pipe, z):
    return np.stack([np.asarray(im) for im in to_pil(pipe.decode(z))])


def run(base, refiner, at, **kw):
    base.set_refiner(refiner, at)
    try:
        images = base(PROMPT, negative_prompt=NEGATIVE, guidance=CFG, width=SIZE, height=SIZE, seed=3,
                      prompt_syntax="plain", **kw)  # fmt: skip
    finally:
        base.refiner = None
    assert f"Refiner switch at: {at}" in images[0].info["parameters"]
    return np.stack([np.asarray(im) for im in images])


def test_refiner_from_an_init_image_as_a1111(pair):  # noqa: F811
    base, refiner = pair
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    vae = base.components.vae
    with torch.no_grad():
        pixels = torch.from_numpy(np.asarray(image) / 127.5 - 1).permute(2, 0, 1)[None].float()
        z0 = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    want = decoded(refiner, sample_from(Switching(base, refiner, 0.6, SIZE, 1), z0, [3], 6, 0.6, fixed=False))
    got = run(base, refiner, 0.6, steps=6, scheduler="euler_a", rng="nv", image=image, strength=0.6)
    assert close(got, want)
    alone = base(PROMPT, negative_prompt=NEGATIVE, guidance=CFG, width=SIZE, height=SIZE, seed=3, steps=6, prompt_syntax="plain",
                 scheduler="euler_a", rng="nv", image=image, strength=0.6)  # fmt: skip
    assert not close(got, np.stack([np.asarray(im) for im in alone]))  # the refiner did take over


def test_refiner_in_the_hires_pass_as_a1111(pair):  # noqa: F811
    """A1111's default "second pass": the first pass is the base's alone; the hires pass (Latent, 2x,
    strength 0.5, 3 steps) switches at 0.7 and the refiner decodes."""
    base, refiner = pair
    first = a1111_reference(base, "euler_a", [3], rng="nv", latents=True)
    up = F.interpolate(first, scale_factor=2, mode="bilinear", antialias=False)
    want = decoded(refiner, sample_from(Switching(base, refiner, 0.7, 2 * SIZE, 1), up, [3], 3, 0.5, fixed=True))
    got = run(base, refiner, 0.7, steps=4, scheduler="euler_a", rng="nv", hires=2.0, hires_strength=0.5,
              hires_steps=6, hires_upscaler="latent")  # fmt: skip
    assert close(got, want)


def test_refiner_on_a_timestep_sampler_as_a1111(pair):  # noqa: F811
    """DDIM: the refiner from the first timestep t with (999 - t) / 1000 >= 0.5 (before: silently the base)."""
    base, refiner = pair
    f = base.scale_factor
    source = Generators([3], (4, SIZE // f, SIZE // f), "cpu")
    acp = LatentDiffusion(base.components.unet, base.components.scheduler_config).alphas_cumprod
    with torch.no_grad():
        z = ref_ddim(Switching(base, refiner, 0.5, SIZE, 1).eps, source.first, a1111_timesteps.timesteps(5), acp)
    assert close(run(base, refiner, 0.5, steps=5, scheduler="ddim", rng="cpu"), decoded(refiner, z))


def test_an_inpainting_base_with_a_refiner_is_refused():
    class Family:  # an inpainting UNet's family, as the check sees it
        name, label = "sdxl", "SDXL"

        @staticmethod
        def inpainting(_):
            return True

    config = {"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon"}
    pipe = SimpleNamespace(family=Family, components=SimpleNamespace(scheduler_config=config), refiner=object())
    request = SimpleNamespace(a1111=NoiseRequest(rng="nv"), scheduler="euler_a", sampler_options=(), source=None,
                              options=None, controls=(), image_prompts=())  # fmt: skip
    with pytest.raises(UsageError, match="not after an inpainting model"):
        check(pipe, request)


def txt2img_latents(sw, seeds, steps):
    """A1111's txt2img with Euler a (NV noise) through the switching denoiser."""
    ks, _ = load()
    sigmas = a1111_sigmas(ks, k_wrap(sw.models[0]), "euler_a", "automatic", steps)
    source = Generators(seeds, (4, SIZE // sw.models[0].scale_factor, SIZE // sw.models[0].scale_factor), "nv")
    x = source.first * sigmas[0]
    with torch.no_grad():
        return ks.sample_euler_ancestral(
            sw.denoised, x, sigmas, disable=True, noise_sampler=lambda *_: source.randn_like(x)
        )


@pytest.mark.parametrize("passes", ["first", "both"])
def test_the_other_refiner_passes_as_a1111(pair, passes):  # noqa: F811
    """A1111's hires_fix_refiner_pass "first pass" / "both passes": the first pass switches too; the base
    is loaded again for the hires pass, which switches again ("both") or not ("first"), and the model it
    ended on decodes."""
    base, refiner = pair
    first = txt2img_latents(Switching(base, refiner, 0.6, SIZE, 1), [3], 4)
    up = F.interpolate(first, scale_factor=2, mode="bilinear", antialias=False)
    at = 0.6 if passes == "both" else 2.0  # 2: never
    z = sample_from(Switching(base, refiner, at, 2 * SIZE, 1), up, [3], 3, 0.5, fixed=True)
    want = decoded(refiner if passes == "both" else base, z)
    got = run(base, refiner, 0.6, steps=4, scheduler="euler_a", rng="nv", hires=2.0, hires_strength=0.5,
              hires_steps=6, hires_upscaler="latent", hires_refiner_pass=passes)  # fmt: skip
    assert close(got, want)


def test_the_refiner_pass_is_written_and_read_as_a1111():
    from latentdiff.images.a1111_read import params_from_a1111
    from latentdiff.images.infotext import _hires_fields

    record = {"hires": 2.0, "steps": 4, "refiner": "r", "hires_refiner_pass": "both"}
    assert _hires_fields(record)["Hires refiner"] == "both passes"
    assert _hires_fields({**record, "hires_refiner_pass": None})["Hires refiner"] is None  # A1111's default
    text = "fox\nSteps: 4, Sampler: Euler a, Seed: 3, Size: 64x64, Denoising strength: 0.5, Hires upscale: 2, "
    params, _ = params_from_a1111(text + "Hires refiner: first pass, Refiner: r, Refiner switch at: 0.6")
    assert params["hires_refiner_pass"] == "first"


def test_a_switch_point_past_the_last_call_leaves_the_base_to_decode(pair):  # noqa: F811
    """DDIM's last call at 4 steps is at timestep 251: (999 - 251) / 1000 < 0.8, so the refiner never takes
    over and, as in A1111, the base's pixels come out (its VAE decoding)."""
    base, refiner = pair
    kw = dict(negative_prompt=NEGATIVE, guidance=CFG, width=SIZE, height=SIZE, seed=3, steps=4, prompt_syntax="plain")
    alone = base(PROMPT, scheduler="ddim", rng="cpu", **kw)
    base.set_refiner(refiner, 0.8)
    try:
        got = base(PROMPT, scheduler="ddim", rng="cpu", **kw)
    finally:
        base.refiner = None
    assert np.array_equal(np.asarray(got[0]), np.asarray(alone[0]))
