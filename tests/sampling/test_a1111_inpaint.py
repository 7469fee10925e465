"""Inpainting on A1111's own path (workflows/a1111_inpaint.py) against A1111 1.10's img2img with a mask
rebuilt here: the mask binarised and blurred with OpenCV (as A1111 calls it), its latent mask by PIL's
resize and rounding, the denoised x0 blended with the init latents after each model call (k-diffusion's
Euler a) or the model's input before it (DDIM), the final sample blended, the decoded picture laid over
the source with the doubled blurred mask; an inpainting UNet given the rounded mask and the masked
picture's latents. Tiny random SD1 models, 4 steps, pixels within 1/255."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from latentdiff.errors import UsageError
from latentdiff.images.a1111_read import params_from_a1111
from latentdiff.sampling import a1111_timesteps
from latentdiff.sampling.a1111 import img2img_steps
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_a1111_img2img import pixels
from tests.sampling.test_a1111_path import (
    CFG,
    NEGATIVE,
    PROMPT,
    SIZE,
    STEPS,
    Generators,
    LatentDiffusion,
    TorchHijack,
    a1111_sigmas,
    close,
    k_wrap,
)
from tests.sampling.test_a1111_timesteps import ref_ddim

cv2 = pytest.importorskip("cv2")
BLUR, STRENGTH = 3, 0.75
IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (16, 20, 44, 48))


def a1111_masks(hw):
    """A1111's image mask (binarised, OpenCV-blurred x then y), its latent mask and overlay alpha."""
    m = np.array(MASK.point(lambda x: 255 if x > 128 else 0))
    k = 2 * int(2.5 * BLUR + 0.5) + 1
    m = cv2.GaussianBlur(cv2.GaussianBlur(m, (k, 1), BLUR), (1, k), BLUR)
    small = np.asarray(Image.fromarray(m).convert("RGB").resize((hw[1], hw[0])), dtype=np.float32)[..., 0] / 255
    overlay = Image.fromarray(np.clip(m.astype(np.float32) * 2, 0, 255).astype(np.uint8))
    return m, torch.from_numpy(np.around(small))[None, None], overlay


def laid_over(result):
    """A1111's apply_overlay: the source, its alpha the inverted overlay mask, over the result."""
    _, _, overlay = a1111_masks((1, 1))
    top = IMAGE.convert("RGBA")
    top.putalpha(ImageOps.invert(overlay))
    out = result.convert("RGBA")
    out.alpha_composite(top)
    return np.asarray(out.convert("RGB"))


def init_latents(pipe, image):
    vae = pipe.components.vae
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(image) / 127.5 - 1).permute(2, 0, 1)[None].float()
        return vae.encode(x).latent_dist.mean * vae.config.scaling_factor


def ours(pipe, sampler, seed, content="original"):
    got = pipe(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=seed,
               scheduler=sampler, prompt_syntax="plain", rng="cpu", image=IMAGE, mask=MASK, mask_blur=BLUR,
               strength=STRENGTH, masked_content=content)  # fmt: skip
    if content != "original":  # written as A1111 writes it, read back to the same
        read = params_from_a1111(got[0].info["parameters"])[0]
        assert (read["masked_content"], read["rng"]) == (content, "cpu")
    return np.asarray(got[0])


def a1111_fill(image, mask):
    """A1111's masking.fill as it is written: blurs of the unmasked picture composited, some twice."""
    out = Image.new("RGBA", image.size)
    cut = Image.new("RGBa", image.size)
    cut.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = cut.convert("RGBa").filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def start_latents(pipe, content, seed, shape):
    """A1111's init latents for a masked content: the picture's (filled), its masked area noise or 0."""
    m, nmask, _ = a1111_masks(shape)
    z0 = init_latents(pipe, a1111_fill(IMAGE, Image.fromarray(m)) if content == "fill" else IMAGE)
    if content == "latent_noise":
        z0 = z0 * (1 - nmask) + torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(seed)) * nmask
    return z0 * (1 - nmask) if content == "latent_nothing" else z0


@torch.no_grad()
def euler_a_inpainted(pipe, z0, nmask, seed):
    """A1111's img2img with a mask by Euler a from latents `z0`: its pixels (uint8, decoded)."""
    ks, _ = load()
    wrap = k_wrap(pipe)
    total, t_enc = img2img_steps(STEPS, STRENGTH, False)
    sigmas = a1111_sigmas(ks, wrap, "euler_a", "automatic", total)
    sched = sigmas[total - t_enc - 1 :]
    source = Generators([seed], tuple(z0.shape[1:]), "cpu")
    cond, uncond = pipe.conditioning([PROMPT], [NEGATIVE], SIZE, SIZE, "plain", 1)

    def cfg_denoiser(x, sigma):  # A1111's CFGDenoiser: CFG on x0, then the blend (after)
        d_c, d_u = wrap(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond.cat(uncond)).chunk(2)
        return (d_u + (d_c - d_u) * CFG) * nmask + z0 * (1 - nmask)

    saved, ks.torch = ks.torch, TorchHijack(source)
    try:
        z = ks.sample_euler_ancestral(cfg_denoiser, z0 + source.first * sched[0], sched, disable=True)
    finally:
        ks.torch = saved
    return pixels(pipe, z * nmask + z0 * (1 - nmask))[0]


SLOW = pytest.mark.slow


@torch.no_grad()
@pytest.mark.parametrize("content", ["original", "latent_noise", pytest.param("fill", marks=SLOW),
                                     pytest.param("latent_nothing", marks=SLOW)])  # fmt: skip
def test_inpainting_with_euler_a_matches_a1111(pipe_sd1, content):
    shape = (SIZE // pipe_sd1.scale_factor,) * 2
    _, nmask, _ = a1111_masks(shape)
    z0 = start_latents(pipe_sd1, content, 4, shape)
    want = laid_over(Image.fromarray(euler_a_inpainted(pipe_sd1, z0, nmask, 4)))
    got = ours(pipe_sd1, "euler_a", 4, content)
    assert close(got, want)
    assert np.array_equal(got[:4], np.asarray(IMAGE)[:4])  # far from the mask: the source's own pixels


@pytest.fixture(scope="module")
def pipe_inpaint(tmp_path_factory):
    from latentdiff import Pipeline
    from latentdiff.models.testing import make_tiny_model

    p = Pipeline.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "inp", "sd1-inpaint"), device="cpu")
    p.progress = False
    return p


@torch.no_grad()
def test_an_inpainting_unet_with_ddim_matches_a1111(pipe_inpaint):
    """A1111's inpainting_image_conditioning: the rounded blurred mask (nearest to latent size) and the
    latents of the picture with the masked pixels at 0; DDIM blends the model's input (before)."""
    pipe, c = pipe_inpaint, pipe_inpaint.components
    z0 = init_latents(pipe, IMAGE)
    m, nmask, _ = a1111_masks(z0.shape[2:])
    full = torch.from_numpy(np.round(m.astype(np.float32) / 255))[None, None]
    masked_pixels = torch.from_numpy(np.asarray(IMAGE) / 127.5 - 1).permute(2, 0, 1)[None].float() * (1 - full)
    vae = c.vae
    masked = vae.encode(masked_pixels).latent_dist.mean * vae.config.scaling_factor
    concat = torch.cat([F.interpolate(full, size=z0.shape[2:]), masked], dim=1).repeat(2, 1, 1, 1)
    model = LatentDiffusion(c.unet, c.scheduler_config)
    cond, uncond = pipe.conditioning([PROMPT], [NEGATIVE], SIZE, SIZE, "plain", 1)

    def eps(x, t):
        x = x * nmask + z0 * (1 - nmask)
        out = model.apply_model(torch.cat([torch.cat([x, x]), concat], dim=1), torch.full((2,), float(t)),
                                cond.cat(uncond))  # fmt: skip
        e_c, e_u = out.chunk(2)
        return e_u + (e_c - e_u) * CFG

    total, t_enc = img2img_steps(STEPS, STRENGTH, False)
    ts = a1111_timesteps.timesteps(total)
    a = model.alphas_cumprod[ts[t_enc]]
    noise = Generators([6], tuple(z0.shape[1:]), "cpu").first
    z = ref_ddim(eps, z0 * a.sqrt() + noise * (1 - a).sqrt(), ts[:t_enc], model.alphas_cumprod)
    want = laid_over(Image.fromarray(pixels(pipe, z * nmask + z0 * (1 - nmask))[0]))
    assert close(ours(pipe, "ddim", 6), want)


@pytest.mark.parametrize("kw, words", [
    ({"masked_content": "fill"}, "masked content fill runs on A1111's own path"),
    ({"rng": "cpu", "masked_content": "noise"}, "masked_content must be one of original, fill"),
])  # fmt: skip
def test_what_it_does_not_run_is_one_line(pipe_sd1, kw, words):
    with pytest.raises(UsageError, match=words):
        pipe_sd1(PROMPT, steps=2, width=SIZE, height=SIZE, image=IMAGE, mask=MASK, **kw)
