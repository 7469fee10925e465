"""ControlNet together with what else changes the model: a LoRA merged at load (diffusers' ControlNet
pipeline on the same merged weights gives the same pixels) and the SDXL refiner (the unit steers the
base's steps; at weight 0 the whole call is the plain base + refiner call, pixel for pixel)."""

import numpy as np
import torch
from helpers import max_pixel_diff, noise_image, tiny_controlnet
from safetensors.torch import save_file

from latentdiff import Control, Pipeline
from latentdiff.sampling.loop import make_scheduler

UNET_LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def _lora(path, width: int):
    g = torch.Generator().manual_seed(5)
    down, up = torch.randn(4, width, generator=g) * 0.5, torch.randn(width, 4, generator=g) * 0.5
    save_file({f"unet.{UNET_LAYER}.lora_A.weight": down, f"unet.{UNET_LAYER}.lora_B.weight": up}, str(path))
    return path


def _ours(path, **kw):
    p = Pipeline.from_pretrained(path, device="cpu", dtype="fp32", **kw)
    p.progress = False
    return p


def test_controlnet_on_a_lora_model_matches_diffusers(tiny_sd1, tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    plain = _ours(tiny_sd1)
    width = plain.components.unet.get_submodule(UNET_LAYER).weight.shape[1]
    ours = _ours(tiny_sd1, loras=[str(_lora(tmp_path / "l.safetensors", width))])
    assert not torch.equal(
        ours.components.unet.get_submodule(UNET_LAYER).weight, plain.components.unet.get_submodule(UNET_LAYER).weight
    )
    net, image = tiny_controlnet(ours.components.unet, ours.scale_factor, 1), noise_image((64, 64), 3)
    c = ours.components
    ref = StableDiffusionControlNetPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        controlnet=net,
        scheduler=make_scheduler(c.scheduler_config, "euler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    theirs = ref(
        "a red apple",
        image=image,
        num_inference_steps=4,
        guidance_scale=6.0,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(7)],
    ).images[0]
    mine = ours("a red apple", steps=4, guidance=6.0, seed=7, scheduler="euler", controls=[Control(image, net)])[0]
    without = ours("a red apple", steps=4, guidance=6.0, seed=7, scheduler="euler")[0]
    assert max_pixel_diff([mine], [theirs]) <= 1
    assert max_pixel_diff([mine], [without]) > 4  # the unit does steer the LoRA model


def test_controlnet_with_the_sdxl_refiner(tiny_sdxl, tiny_refiner):
    ours, refiner = _ours(tiny_sdxl), _ours(tiny_refiner)
    ours.set_refiner(refiner, 0.7)
    net, image = tiny_controlnet(ours.components.unet, ours.scale_factor, 2), noise_image((32, 32), 4)
    call = dict(steps=5, guidance=5.0, seed=3, scheduler="euler", width=32, height=32)
    plain = ours("a red apple", **call)[0]
    off = ours("a red apple", controls=[Control(image, net, weight=0.0)], **call)[0]
    on = ours("a red apple", controls=[Control(image, net)], **call)[0]
    assert np.array_equal(np.asarray(off), np.asarray(plain))
    assert max_pixel_diff([on], [plain]) > 0
