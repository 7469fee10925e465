"""IP-Adapter image prompts with the other workflows (ControlNet, img2img, inpainting, hires), and
bad input refused in one line before any work, the UNet left as it was."""

import shutil

import numpy as np
import pytest
import torch
from helpers import max_pixel_diff, noise_image, tiny_controlnet
from ip_adapter_files import FACE_DIM, h94_layout
from PIL import Image
from safetensors.torch import save_file

from latentdiff import Control, ImagePrompt, Pipeline
from latentdiff.errors import UsageError
from latentdiff.sampling.loop import make_scheduler

PIC = noise_image((64, 64), seed=5)


@pytest.fixture(scope="module")
def setup(tiny_sd1, tiny_sdxl, tmp_path_factory):
    ours = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    ours.progress = False
    root = tmp_path_factory.mktemp("ipa")
    folder = h94_layout(root, ours.components.unet)
    xl = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    h94_layout(root, xl.components.unet, sdxl=True)
    return ours, folder, root


def call(ours, prompts, **kw):
    base = dict(steps=3, guidance=5.0, seed=2, scheduler="euler")
    return ours("a red apple", image_prompts=prompts, **{**base, **kw})


def test_with_a_controlnet_matches_diffusers(setup):
    from diffusers import StableDiffusionControlNetPipeline

    ours, folder, _ = setup
    net = tiny_controlnet(ours.components.unet, ours.scale_factor, 1)
    cmap = noise_image((64, 64), seed=9)
    adapter = folder / "ip-adapter-plus_sd15.safetensors"
    mine = call(ours, [ImagePrompt(PIC, 0.6)], ip_adapter=adapter, controls=[Control(cmap, net, 0.8)])
    ref = StableDiffusionControlNetPipeline.from_pretrained(
        ours.model_dir, controlnet=net, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    ref.load_ip_adapter(str(folder.parent), subfolder="models", weight_name=adapter.name)
    ref.set_ip_adapter_scale(0.6)
    theirs = ref(
        "a red apple", image=cmap, ip_adapter_image=PIC, controlnet_conditioning_scale=0.8, num_inference_steps=3,
        guidance_scale=5.0, generator=[torch.Generator().manual_seed(2)], height=64, width=64,
    ).images  # fmt: skip
    assert max_pixel_diff(mine, theirs) <= 1


def test_img2img_matches_diffusers(setup):
    from diffusers import StableDiffusionImg2ImgPipeline

    ours, folder, _ = setup
    init = noise_image((64, 64), seed=11)
    adapter = folder / "ip-adapter_sd15.safetensors"
    mine = call(ours, [ImagePrompt(PIC, 0.9)], ip_adapter=adapter, image=init, strength=0.7, steps=5)
    ref = StableDiffusionImg2ImgPipeline.from_pretrained(
        ours.model_dir, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    ref.load_ip_adapter(str(folder.parent), subfolder="models", weight_name=adapter.name)
    ref.set_ip_adapter_scale(0.9)
    theirs = ref(
        "a red apple", image=init, strength=0.7, ip_adapter_image=PIC, num_inference_steps=5, guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(2)],
    ).images  # fmt: skip
    assert max_pixel_diff(mine, theirs) <= 1


def test_inpainting_and_hires_take_the_image_prompt(setup):
    ours, folder, _ = setup
    adapter = folder / "ip-adapter_sd15.safetensors"
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    runs = {
        "inpaint": dict(image=noise_image((64, 64), seed=12), mask=mask, strength=1.0),
        "hires": dict(hires=1.5, hires_strength=0.5, hires_upscaler="latent"),
    }
    for kw in runs.values():
        plain = call(ours, None, **kw)
        steered = call(ours, [ImagePrompt(PIC, 1.0)], ip_adapter=adapter, **kw)
        assert steered[0].size == plain[0].size
        assert max_pixel_diff(steered, plain) > 4
        assert max_pixel_diff(call(ours, [ImagePrompt(PIC, 0.0)], ip_adapter=adapter, **kw), plain) == 0


def _no_adapter(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.ones(())}, str(path))
    return path


def _lonely_adapter(tmp_path, folder):
    alone = tmp_path / "alone" / "ip-adapter_sd15.safetensors"
    alone.parent.mkdir()
    shutil.copy(folder / "ip-adapter_sd15.safetensors", alone)
    return alone


def _bad_face(tmp_path):
    np.save(tmp_path / "face.npy", np.zeros((2, FACE_DIM + 1), np.float32))
    return tmp_path / "face.npy"


BAD = {
    "missing picture": (lambda t, f, r: ([ImagePrompt(t / "nope.png")], f / "ip-adapter_sd15.safetensors", None),
                        r"image_prompts\[0\]\.image .*nope\.png"),
    "not a picture": (lambda t, f, r: ([ImagePrompt(42)], f / "ip-adapter_sd15.safetensors", None),
                      "must be an image file's path or a PIL image"),
    "scale too big": (lambda t, f, r: ([ImagePrompt(PIC, 2.5)], f / "ip-adapter_sd15.safetensors", None),
                      r"image_prompts\[0\]\.scale must be a number from 0 to 2"),
    "scale a bool": (lambda t, f, r: ([ImagePrompt(PIC, True)], f / "ip-adapter_sd15.safetensors", None), "scale"),
    "too many": (lambda t, f, r: ([ImagePrompt(PIC)] * 9, f / "ip-adapter_sd15.safetensors", None),
                 "9 image prompts given; at most 8"),
    "no adapter": (lambda t, f, r: ([ImagePrompt(PIC)], None, None), "needs an IP-Adapter: pass ip_adapter=FILE"),
    "wrong family": (lambda t, f, r: ([ImagePrompt(PIC)], r / "sdxl_models" / "ip-adapter_sdxl.safetensors", None),
                     r"IP-Adapter for text-embedding width 72, .*this model \(SD 1.x/2.x\) has text-embedding width 32"),
    "no ip-adapter": (lambda t, f, r: ([ImagePrompt(PIC)], _no_adapter(t), None), "is not an IP-Adapter"),
    "pickle": (lambda t, f, r: ([ImagePrompt(PIC)], f / "ip-adapter_sd15.bin", None), "--allow-pickle"),
    "no encoder": (lambda t, f, r: ([ImagePrompt(PIC)], _lonely_adapter(t, f), None), "no image encoder for"),
    "wrong encoder": (lambda t, f, r: ([ImagePrompt(PIC)], f / "ip-adapter_sd15.safetensors",
                                       r / "sdxl_models" / "image_encoder"), "takes 24-wide image features"),
    "bad face": (lambda t, f, r: ([ImagePrompt(_bad_face(t))], f / "ip-adapter-faceid_sd15.safetensors", None),
                 r"face embeddings must have shape \(512,\) or \(N, 512\)"),
    "face as picture": (lambda t, f, r: ([ImagePrompt(PIC)], f / "ip-adapter-faceid_sd15.safetensors", None),
                        "face-embedding file"),
    "not a list": (lambda t, f, r: ("a.png", f / "ip-adapter_sd15.safetensors", None), "list of latentdiff.ImagePrompt"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_usage_error_and_leaves_the_unet(setup, tmp_path, case):
    ours, folder, root = setup
    make, match = BAD[case]
    prompts, adapter, encoder = make(tmp_path, folder, root)
    unet = ours.components.unet
    processors = dict(unet.attn_processors)
    with pytest.raises(UsageError, match=match) as err:
        call(ours, prompts, ip_adapter=adapter, image_encoder=encoder)
    assert len(str(err.value).splitlines()) == 1
    assert dict(unet.attn_processors) == processors and unet.encoder_hid_proj is None
