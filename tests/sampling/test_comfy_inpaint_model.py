"""ComfyUI's InpaintModelConditioning graph (images/comfy_latent.py, workflows/comfy_start.py
model_conditioning, comfy_path.py's extra channels): the picture encoded as it is, the mask resized to it
and both cut to a multiple of 8, the masked pixels grey and encoded beside the mask (bilinear to the
latent, rounded) as a 9-channel inpainting UNet's extra input, the mask also the noise mask unless
noise_mask is off. Against ComfyUI's rules rebuilt with k-diffusion (tests/sampling/test_comfy_graph_run.py's
reference, its UNet given the extra channels). Tiny random SD1 inpainting model, pixels within 1/255."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import COMFY_GRAPH

from latentdiff.errors import UsageError
from latentdiff.images.comfy_graph import params_from_comfy
from tests.images.test_comfy_png_run import LOAD
from tests.sampling import test_comfy_graph_run
from tests.sampling.test_comfy_graph_run import close, load_picture, ours, reference, stage
from tests.sampling.test_comfy_path import Sampling, reference_sigmas

picture = test_comfy_graph_run.picture  # its fixture: a 34x32 RGBA picture, a transparent square


def model_graph(noise_mask=True) -> dict:
    """LoadImage -> InpaintModelConditioning (the prompts, the picture, its alpha as the mask) -> KSampler."""
    g = copy.deepcopy(COMFY_GRAPH)
    g["10"] = LOAD
    inputs = {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["10", 0], "mask": ["10", 1]}
    g["11"] = {"class_type": "InpaintModelConditioning", "inputs": {**inputs, "noise_mask": noise_mask}}
    del g["5"]
    g["3"]["inputs"].update(positive=["11", 0], negative=["11", 1], latent_image=["11", 2], denoise=1)
    return g


def test_the_graph_reads_into_a_run():
    params = params_from_comfy(model_graph(), "graph")
    run = params["comfy"]["run"]
    assert (run["encoding"], run["noise_mask"], run["mask"], run["image"]) == (
        "model",
        True,
        ["photo.png", "A"],
        "photo.png",
    )
    assert params["prompt"] == COMFY_GRAPH["6"]["inputs"]["text"]
    assert params_from_comfy(model_graph(False), "graph")["comfy"]["run"]["noise_mask"] is False


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g["11"]["inputs"].update(noise_mask="yes"), "noise_mask is 'yes', not true or false"),
        (lambda g: g["3"]["inputs"].update(positive=["6", 0], negative=["7", 0]), "takes output 2 of Inpaint"),
        (lambda g: g["3"]["inputs"].update(negative=["11", 0]), "takes output 0 of InpaintModelConditioning"),
    ],
)
def test_graphs_latentdiff_cannot_run_are_one_line(change, message):
    g = model_graph()
    change(g)
    with pytest.raises(UsageError, match=message):
        params_from_comfy(g, "graph")


@pytest.fixture(scope="module")
def pipe_inpaint(tmp_path_factory):
    from latentdiff import Pipeline
    from latentdiff.models.testing import make_tiny_model

    p = Pipeline.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "inpaint", "sd1-inpaint"), device="cpu", dtype="fp32")  # fmt: skip
    p.progress = False
    return p


class WithChannels:
    """The pipeline, its UNet given `extra` (1, 5, h, w) beside each row of its input."""

    def __init__(self, pipe, extra):
        self.pipe = pipe
        self.components = copy.copy(pipe.components)
        unet = pipe.components.unet
        self.components.unet = lambda rows, t, **kw: unet(
            torch.cat([rows, extra.repeat(len(rows), 1, 1, 1)], 1), t, **kw
        )

    def __getattr__(self, name):
        return getattr(self.pipe, name)


@torch.no_grad()
def extra_channels(pipe, path):
    """InpaintModelConditioning's extra input, written out: the grey-masked picture's latents beside the rounded mask."""
    vae = pipe.components.vae
    rgb, mask = load_picture(path)  # cropped to 32x32: a multiple of 8 and of the VAE's factor
    grey = torch.where(mask[0, 0, ..., None].round() > 0, torch.full_like(rgb, 0.5), rgb)
    masked = vae.encode(grey.movedim(-1, 1) * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    small = F.interpolate(mask, size=masked.shape[2:], mode="bilinear").round()
    return torch.cat([small, masked], 1)


@pytest.mark.parametrize("noise_mask", [True, False])
def test_an_inpainting_unet_runs_comfyuis_inpaint_model_conditioning(pipe_inpaint, picture, noise_mask):
    s = Sampling(pipe_inpaint.components.scheduler_config)
    runs = [("sample_euler_ancestral", reference_sigmas(s, "normal", 4), True)]
    graph = {"stages": [stage()], "image": str(picture), "mask": [str(picture), "A"], "encoding": "model"}
    got = ours(pipe_inpaint, {**graph, "noise_mask": noise_mask})
    proxy = WithChannels(pipe_inpaint, extra_channels(pipe_inpaint, picture))
    assert close(got, reference(proxy, picture, runs, (False, 0) if noise_mask else None))


def test_an_inpainting_unet_without_a_mask_is_one_line(pipe_inpaint, picture):
    with pytest.raises(UsageError, match="inpainting UNet's ComfyUI graph runs here with a mask"):
        ours(pipe_inpaint, {"stages": [stage()], "image": str(picture)})


@torch.no_grad()
def test_an_inpainting_unet_under_vae_encode_for_inpaint(pipe_inpaint, picture):
    """Without InpaintModelConditioning the UNet sees the noise mask and the start latent (ComfyUI's concat_cond)."""
    s = Sampling(pipe_inpaint.components.scheduler_config)
    runs = [("sample_euler", reference_sigmas(s, "karras", 3), True)]
    graph = {"stages": [stage("euler", "karras", 3)], "image": str(picture), "mask": [str(picture), "A"]}
    got = ours(pipe_inpaint, {**graph, "encoding": "inpaint", "grow_mask_by": 6})
    vae = pipe_inpaint.components.vae
    rgb, mask = load_picture(picture, True, 6)
    start = vae.encode(rgb.movedim(-1, 1) * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    extra = torch.cat([F.interpolate(mask, size=start.shape[2:], mode="bilinear").round(), start], 1)
    assert close(got, reference(WithChannels(pipe_inpaint, extra), picture, runs, (True, 6)))
