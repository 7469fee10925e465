"""ComfyUI graphs that start from a picture or run in stages (workflows/comfy_start.py, sampling/comfy.py
Stage and Masked), against ComfyUI's 2026 code's rules rebuilt here with k-diffusion's own `sample_*`:
LoadImage -> VAEEncode (the posterior's mode) -> KSampler at denoise < 1 (the last steps + 1 sigmas of
int(steps / denoise) steps; the latent plus the seed's noise times the first sigma), the noise mask
applied around each model call (KSamplerX0Inpaint), VAEEncodeForInpaint's grey pixels and grown mask,
and KSamplerAdvanced's start / end steps, added noise and leftover noise in a chain of two.
Tiny random SD1 model, pixels within 1/255."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.images.write import to_pil
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_comfy_path import Sampling, reference_sigmas

PROMPT, NEGATIVE, SIZE, CFG, SEED = "a red fox", "blurry", 32, 5.0, 7


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 34x32 RGBA picture (cropped to 32x32 by ComfyUI's VAE encode at the tiny VAE's factor 4) whose alpha masks a square."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (32, 34, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[8:20, 10:22, 3] = 0  # transparent: ComfyUI's LoadImage mask 1 there
    path = tmp_path_factory.mktemp("comfy") / "input.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def stage(sampler="euler_ancestral", scheduler="normal", steps=4, **kw):
    return {"sampler": sampler, "scheduler": scheduler, "steps": steps, "cfg": CFG, "seed": SEED, **kw}


def ours(pipe, graph):
    images = pipe(PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE, seed=SEED, guidance=CFG,
                  prompt_syntax="plain", noise="comfy", comfy_graph=graph)  # fmt: skip
    return np.asarray(images[0])


def load_picture(path, grey_mask=None, grow=0):
    """LoadImage (alpha dropped) cropped as VAEEncode crops it (a column each side); with
    `grey_mask`, VAEEncodeForInpaint's grey pixels and grown, rounded mask."""
    a = np.asarray(Image.open(path))
    rgb = torch.from_numpy(a[..., :3].astype(np.float32) / 255.0)[None]
    mask = 1.0 - torch.from_numpy(a[..., 3].astype(np.float32) / 255.0)[None, None]
    rgb, mask = rgb[:, :, 1:33], mask[..., 1:33]
    if grey_mask:
        rgb = torch.where(mask[0, 0, ..., None].round() > 0, torch.full_like(rgb, 0.5), rgb)
        if grow:
            mask = F.conv2d(mask.round(), torch.ones(1, 1, grow, grow), padding=math.ceil((grow - 1) / 2)).clamp(0, 1)
        mask = mask[..., :SIZE, :SIZE].round()
    return rgb, mask


def guided(pipe, s, latent, noise, mask):
    """ComfyUI's CFG denoiser around the tiny UNet, inside KSamplerX0Inpaint's mask where given."""
    c = pipe.components
    both = torch.cat([t.hidden for t in pipe.conditioning([PROMPT], [NEGATIVE], SIZE, SIZE, "plain", 1)])

    def model(x, sigma, **_):
        if mask is not None:
            x = x * mask + (noise * sigma + latent) * (1 - mask)
        rows = torch.cat([x, x]) / (sigma**2 + 1) ** 0.5
        eps = c.unet(rows, s.timestep(sigma).float().repeat(2), encoder_hidden_states=both).sample
        cond, uncond = (torch.cat([x, x]) - eps * sigma).chunk(2)
        out = uncond + (cond - uncond) * CFG
        return out if mask is None else out * mask + latent * (1 - mask)

    return model


@torch.no_grad()
def reference(pipe, path, runs, mask_of=None):
    """ComfyUI's chain of sampler runs rebuilt with k-diffusion: `runs` = [(sampler function name,
    sigmas, add noise)], each from the last one's latents; `mask_of`: (grey pixels, grow) for a mask."""
    ks, _ = load()
    c = pipe.components
    s = Sampling(c.scheduler_config)
    rgb, mask = load_picture(path, *(mask_of or (False, 0)))
    latent = c.vae.encode(rgb.movedim(-1, 1) * 2 - 1).latent_dist.mode() * c.vae.config.scaling_factor
    mask = None if mask_of is None else F.interpolate(mask, size=latent.shape[2:], mode="bilinear").repeat(1, 4, 1, 1)
    shape = latent.shape
    for name, sigmas, add in runs:
        noise = torch.randn(latent.shape, generator=torch.manual_seed(SEED)) if add else torch.zeros_like(latent)
        g = torch.Generator().manual_seed(SEED + 1)
        options = {"noise_sampler": lambda a, b, g=g: torch.randn(shape, generator=g)} if "ancestral" in name else {}
        model = guided(pipe, s, latent, noise, mask)
        latent = getattr(ks, name)(model, noise * sigmas[0] + latent, sigmas, disable=True, **options)
    return np.asarray(to_pil(pipe.decode(latent))[0])


def close(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_img2img_at_a_partial_denoise(pipe_sd1, picture):
    """KSampler denoise 0.5 of 4 steps: the last 5 sigmas of an 8-step schedule."""
    sigmas = reference_sigmas(Sampling(pipe_sd1.components.scheduler_config), "normal", 8)[-5:]
    want = reference(pipe_sd1, picture, [("sample_euler_ancestral", sigmas, True)])
    got = ours(pipe_sd1, {"stages": [stage(denoise=0.5)], "image": str(picture)})
    assert close(got, want)


def test_set_latent_noise_mask_and_vae_encode_for_inpaint(pipe_sd1, picture):
    s = Sampling(pipe_sd1.components.scheduler_config)
    runs = [("sample_euler_ancestral", reference_sigmas(s, "normal", 4), True)]
    masked = {"stages": [stage()], "image": str(picture), "mask": [str(picture), "A"]}
    assert close(ours(pipe_sd1, masked), reference(pipe_sd1, picture, runs, (False, 0)))
    inpaint = {**masked, "encoding": "inpaint", "grow_mask_by": 6}
    assert close(ours(pipe_sd1, inpaint), reference(pipe_sd1, picture, runs, (True, 6)))


def test_two_advanced_samplers_chained(pipe_sd1, picture):
    """The base + refiner graph: steps 0-3 of 5 with leftover noise, then 3-end without added noise."""
    s = Sampling(pipe_sd1.components.scheduler_config)
    full = reference_sigmas(s, "karras", 5)
    runs = [("sample_dpmpp_2m", full[:4], True), ("sample_euler_ancestral", full[3:], False)]
    first = stage("dpmpp_2m", "karras", 5, end=3, leftover=True)
    second = stage("euler_ancestral", "karras", 5, start=3, add_noise=False)
    got = ours(pipe_sd1, {"stages": [first, second], "image": str(picture)})
    assert close(got, reference(pipe_sd1, picture, runs))


def test_a_deterministic_chain_is_the_whole_run(pipe_sd1):
    """Euler split at step 2 (leftover noise kept, none added after) is Euler over all steps, from an empty latent."""
    whole = ours(pipe_sd1, {"stages": [stage("euler", steps=4)]})
    split = [stage("euler", steps=4, end=2, leftover=True), stage("euler", steps=4, start=2, add_noise=False)]
    assert close(ours(pipe_sd1, {"stages": split}), whole)


@pytest.mark.parametrize(
    "graph, message",
    [
        ({"stages": []}, "1 to 16 sampler stages"),
        ({"stages": [stage("uni_pc_bh2")]}, "ComfyUI's own path runs the samplers"),
        ({"stages": [stage(denoise=1.5)]}, "denoise"),
        ({"stages": [stage()], "mask": ["x.png", "A"]}, "need its image"),
        ({"stages": [stage()], "image": "x.png", "encoding": "inpaint"}, "needs a mask"),
        ({"stages": [stage()], "image": "missing.png"}, "is not usable: not a file"),
    ],
)
def test_bad_graph_runs_are_one_error(pipe_sd1, graph, message):
    with pytest.raises(UsageError, match=message):
        ours(pipe_sd1, graph)
