"""Qwen-Image against diffusers' QwenImagePipeline and QwenImageImg2ImgPipeline on tiny random
models (fp32, CPU): the same folder loaded by both (a Qwen2.5-VL text model with a byte-level BPE
tokenizer trained offline, the one-frame 3D VAE with per-channel latent statistics), the same seeds
(image k of a call: seed + k), within 1/255. Our `guidance` is diffusers' true_cfg_scale (with its
norm rescaling); without a negative prompt neither guides."""

from __future__ import annotations

import numpy as np
import pytest
from flow_parity import box_mask, close, inpaint_pixels, ours, pixels, reference, reference_pixels, repainted
from PIL import Image

W, H = 48, 32  # width != height: the packing and the image shapes must not transpose


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("qwen") / "qwen-image", "qwen-image", seed=0)


def _picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


def test_text_to_image_with_true_cfg_matches_qwen_image_pipeline(qwen_model):
    mine, ref = ours(qwen_model), reference(qwen_model, "QwenImagePipeline")
    args = dict(prompt="a red apple", negative_prompt="blue sky", true_cfg_scale=4.0, num_inference_steps=2)
    want = reference_pixels(ref, 5, 2, (W, H), **args)
    got = pixels(mine("a red apple", "blue sky", guidance=4.0, steps=2, width=W, height=H, num_images=2, seed=5))
    close(got, want)
    plain = pixels(mine("a red apple", "blue sky", guidance=1.0, steps=2, width=W, height=H, seed=5))
    assert np.abs(plain - want[:1]).max() > 1  # the guidance (and its rescaling) changes the pixels


def test_unguided_matches_qwen_image_pipeline(qwen_model):
    mine, ref = ours(qwen_model), reference(qwen_model, "QwenImagePipeline")
    want = reference_pixels(ref, 11, 1, (W, H), prompt="a green pear on a table", num_inference_steps=2)
    close(pixels(mine("a green pear on a table", guidance=1.0, steps=2, width=W, height=H, seed=11)), want)


def test_img2img_matches_qwen_image_img2img_pipeline(qwen_model):
    mine, ref = ours(qwen_model), reference(qwen_model, "QwenImageImg2ImgPipeline")
    picture = _picture()
    args = dict(prompt="a green pear", negative_prompt="", true_cfg_scale=3.0, num_inference_steps=3, strength=0.5)
    want = reference_pixels(ref, 2, 1, (W, H), image=picture, **args)  # image by image: tests/parity/test_flux.py
    got = mine("a green pear", "", guidance=3.0, steps=3, image=picture, strength=0.5, seed=2)
    close(pixels(got), want)


def test_inpaint_matches_qwen_image_inpaint_pipeline(qwen_model):
    mine, ref = ours(qwen_model), reference(qwen_model, "QwenImageInpaintPipeline")
    picture, mask = _picture(1), box_mask((W, H))
    args = dict(prompt="a green pear", num_inference_steps=3, strength=0.7)  # unguided: CFG is held above
    got = pixels(mine("a green pear", guidance=1.0, steps=3, image=picture, mask=mask, mask_blur=0,
                      strength=0.7, seed=4))  # fmt: skip
    close(got, inpaint_pixels(ref, picture, mask, 4, **args))
    assert repainted(got, picture)


def test_a_family_is_told_from_its_folder(qwen_model):
    from latentdiff.families.registry import family_of_folder

    assert family_of_folder(qwen_model).name == "qwen-image"


def test_a_diffusers_qwen_image_lora_matches_diffusers_fused(qwen_model, tmp_path):
    """A diffusers/peft Qwen-Image LoRA (rank 2 on the first block's image query and text value)."""
    import torch
    from safetensors.torch import save_file

    from latentdiff import Pipeline

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("transformer.transformer_blocks.0.attn.to_q", "transformer.transformer_blocks.0.attn.add_v_proj"):
        tensors[f"{name}.lora_A.weight"] = torch.randn(2, 32, generator=g) * 0.5
        tensors[f"{name}.lora_B.weight"] = torch.randn(32, 2, generator=g) * 0.5
    save_file(tensors, str(tmp_path / "style.safetensors"))
    mine = Pipeline.from_pretrained(
        qwen_model, device="cpu", dtype="fp32", loras=[f"{tmp_path / 'style.safetensors'}:0.8"]
    )
    mine.progress = False
    ref = reference(qwen_model, "QwenImagePipeline")
    ref.load_lora_weights(str(tmp_path / "style.safetensors"))
    ref.fuse_lora(lora_scale=0.8)
    got = pixels(mine("a red apple", guidance=1.0, steps=2, width=W, height=H, seed=5))
    close(got, reference_pixels(ref, 5, 1, (W, H), prompt="a red apple", num_inference_steps=2))
    plain = pixels(ours(qwen_model)("a red apple", guidance=1.0, steps=2, width=W, height=H, seed=5))
    assert np.abs(got - plain).max() > 1  # the LoRA changes the pixels
