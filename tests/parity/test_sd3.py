"""SD 3 / 3.5 against diffusers' StableDiffusion3Pipeline, its Img2Img and Inpaint pipelines on tiny
random models (fp32, CPU): the same folder loaded by both, the same seeds (image k of a call: seed
+ k), within 1/255. The variants differ in the transformer's blocks (SD 3.5 medium's dual attention,
SD 3.5's query-key norm); an SD3 folder without T5 runs on zeros in its place, as diffusers does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from flow_parity import box_mask, pasted, reference, reference_pixels, repainted
from flow_parity import close as _close
from flow_parity import ours as _ours
from flow_parity import pixels as _pixels
from PIL import Image

W, H = 48, 32  # width != height: the patches must not transpose
VARIANTS = ("sd3.5-medium", "sd3.5-large", "sd3-medium")


@pytest.fixture(scope="module")
def sd3_models(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("sd3")
    return {v: make_tiny(root / v, v, seed=i) for i, v in enumerate(VARIANTS)}


@pytest.fixture(scope="module")
def sd3_without_t5(sd3_models, tmp_path_factory):
    """The SD 3.5 medium folder as users have it without T5: no text_encoder_3/tokenizer_3, nulls in the index."""
    path = tmp_path_factory.mktemp("sd3") / "no-t5"
    shutil.copytree(sd3_models["sd3.5-medium"], path)
    for name in ("text_encoder_3", "tokenizer_3"):
        shutil.rmtree(path / name)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(
        json.dumps({**index, "text_encoder_3": [None, None], "tokenizer_3": [None, None]})
    )
    return path


def _reference(path, cls_name="StableDiffusion3Pipeline", **parts):
    return reference(path, cls_name, **parts)


def _reference_pixels(pipe, seed: int, n: int, **kwargs) -> np.ndarray:
    return reference_pixels(pipe, seed, n, (W, H), **kwargs)


def _picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_to_image_matches_sd3_pipeline(sd3_models, variant):
    path = sd3_models[variant]
    ours, ref = _ours(path), _reference(path)
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=4.0, num_inference_steps=3)
    got = ours("a red apple", "blue sky", guidance=4.0, steps=3, width=W, height=H, num_images=2, seed=5)
    _close(_pixels(got), _reference_pixels(ref, 5, 2, **args))


def test_guidance_one_runs_without_the_negative_as_diffusers(sd3_models):
    path = sd3_models["sd3.5-large"]
    ours, ref = _ours(path), _reference(path)
    got = ours("a red apple", guidance=1.0, steps=2, width=W, height=H, seed=11)
    _close(_pixels(got), _reference_pixels(ref, 11, 1, prompt="a red apple", guidance_scale=1.0, num_inference_steps=2))


def test_without_t5_matches_sd3_pipeline_without_t5(sd3_without_t5):
    from latentdiff.families.registry import family_of

    ours = _ours(sd3_without_t5)
    assert ours.components.text_encoder_3 is None and family_of(ours.components).name == "sd3"
    ref = _reference(sd3_without_t5, text_encoder_3=None, tokenizer_3=None)
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=5.0, num_inference_steps=3)
    got = ours("a red apple", "blue sky", guidance=5.0, steps=3, width=W, height=H, num_images=2, seed=3)
    _close(_pixels(got), _reference_pixels(ref, 3, 2, **args))


def test_img2img_matches_sd3_img2img_pipeline(sd3_models):
    path = sd3_models["sd3.5-medium"]
    ours, ref = _ours(path), _reference(path, "StableDiffusion3Img2ImgPipeline")
    picture = _picture()
    # 4 steps at 0.6: the SD3 img2img pipeline denoises 3 (int(4 - 2.4) = 1 skipped), SD's pipelines 2
    args = dict(prompt="a green pear", negative_prompt="", guidance_scale=4.0, num_inference_steps=4, strength=0.6)
    # The pipeline encodes a one-picture batch with the first generator only; our image k uses seed + k
    # throughout (it does not depend on its batch), as diffusers called image by image.
    want = np.concatenate([_reference_pixels(ref, seed, 1, image=picture, **args) for seed in (2, 3)])
    got = ours("a green pear", guidance=4.0, steps=4, image=picture, strength=0.6, num_images=2, seed=2)
    _close(_pixels(got), want)


@pytest.mark.parametrize("strength", [0.7, 1.0])
def test_inpaint_matches_sd3_inpaint_pipeline(sd3_models, strength):
    path = sd3_models["sd3.5-medium"]
    ours, ref = _ours(path), _reference(path, "StableDiffusion3InpaintPipeline")
    mask = box_mask((W, H))
    args = dict(prompt="a green pear", guidance_scale=4.0, num_inference_steps=4, strength=strength)
    gen = torch.Generator("cpu").manual_seed(4)
    latents = ref(image=_picture(1), mask_image=mask, generator=[gen], width=W, height=H, output_type="latent", **args)
    # diffusers 0.42's SD3 inpaint pipeline decodes without the VAE's shift_factor (its text-to-image
    # and img2img pipelines add it): the latents are held to it, decoded as StableDiffusion3Pipeline decodes.
    with torch.no_grad():
        decoded = ref.vae.decode(latents.images / ref.vae.config.scaling_factor + ref.vae.config.shift_factor).sample
    want = np.round(ref.image_processor.postprocess(decoded, output_type="np")[0] * 255).astype(np.uint8)
    want = pasted(want, _picture(1), mask)
    got = ours(
        "a green pear", guidance=4.0, steps=4, image=_picture(1), mask=mask, mask_blur=0, strength=strength, seed=4
    )
    _close(_pixels(got), want[None])
    assert repainted(_pixels(got), _picture(1))


def _sd3_lora(path, seed: int = 0):
    """A diffusers/peft SD3 LoRA (rank 2) on the first block's attention and CLIP-L's first q projection."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    layers = {
        "transformer.transformer_blocks.0.attn.to_q": (32, 32),
        "transformer.transformer_blocks.0.attn.add_k_proj": (32, 32),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": (12, 12),
    }
    tensors = {}
    for name, (out_dim, in_dim) in layers.items():
        tensors[f"{name}.lora_A.weight"] = torch.randn(2, in_dim, generator=g) * 0.5
        tensors[f"{name}.lora_B.weight"] = torch.randn(out_dim, 2, generator=g) * 0.5
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("scale", [0.7, 0.0])
def test_a_diffusers_sd3_lora_matches_diffusers_fused(sd3_models, tmp_path, scale):
    from latentdiff import Pipeline

    path, lora = sd3_models["sd3.5-large"], _sd3_lora(tmp_path / "style.safetensors")
    ours = Pipeline.from_pretrained(path, device="cpu", dtype="fp32", loras=[f"{lora}:{scale}"])
    ours.progress = False
    ref = _reference(path)
    ref.load_lora_weights(str(lora))
    ref.fuse_lora(lora_scale=scale)
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=4.0, num_inference_steps=2)
    got = _pixels(ours("a red apple", "blue sky", guidance=4.0, steps=2, width=W, height=H, seed=5))
    _close(got, _reference_pixels(ref, 5, 1, **args))
    plain = _pixels(_ours(path)("a red apple", "blue sky", guidance=4.0, steps=2, width=W, height=H, seed=5))
    assert bool(np.abs(got - plain).max() == 0) is (scale == 0)  # scale 0: the base pixels exactly
