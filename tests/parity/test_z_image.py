"""Z-Image against diffusers' ZImagePipeline, its Img2Img and Inpaint pipelines on tiny random models (fp32,
CPU): the same folder loaded by both (a Qwen3 text model whose byte-level BPE tokenizer, trained
offline, carries a chat template; Flux's VAE), the same seeds (image k of a call: seed + k), within
1/255. Our `guidance` is ZImagePipeline's guidance_scale: 0 (Turbo's) is unguided."""

from __future__ import annotations

import numpy as np
import pytest
from flow_parity import box_mask, close, inpaint_pixels, ours, pixels, reference, reference_pixels, repainted
from PIL import Image

W, H = 48, 32  # width != height: the patches must not transpose


@pytest.fixture(scope="module")
def z_model(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("zimage") / "z-image", "z-image", seed=0)


def _picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_text_to_image_matches_z_image_pipeline(z_model, guidance):
    mine, ref = ours(z_model), reference(z_model, "ZImagePipeline")
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=guidance, num_inference_steps=2)
    want = reference_pixels(ref, 5, 2, (W, H), **args)
    got = mine("a red apple", "blue sky", guidance=guidance, steps=2, width=W, height=H, num_images=2, seed=5)
    close(pixels(got), want)


def test_cfg_normalization_and_truncation_match_z_image_pipeline(z_model):
    """Normalisation capping the guided norm at the conditional's, truncation leaving the last of 3 steps (1 - t/1000
    = 0.4 past 0.3) unguided: each changes the pixels, both together as ZImagePipeline."""
    mine, ref = ours(z_model), reference(z_model, "ZImagePipeline")
    base = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=3.0, num_inference_steps=3)
    options = dict(cfg_normalization=1.0, cfg_truncation=0.3)
    want = reference_pixels(ref, 5, 1, (W, H), **base, **options)
    args = dict(guidance=3.0, steps=3, width=W, height=H, seed=5)
    close(pixels(mine("a red apple", "blue sky", **args, **options)), want)
    for one in ({"cfg_normalization": 1.0}, {"cfg_truncation": 0.3}):
        assert np.abs(pixels(mine("a red apple", "blue sky", **args, **one)) - want).max() > 1


def test_img2img_matches_z_image_img2img_pipeline(z_model):
    mine, ref = ours(z_model), reference(z_model, "ZImageImg2ImgPipeline")
    picture = _picture(0)
    args = dict(prompt="a green pear", guidance_scale=2.0, num_inference_steps=3, strength=0.5)
    want = reference_pixels(ref, 2, 1, (W, H), image=picture, **args)  # image by image: tests/parity/test_flux.py
    got = mine("a green pear", guidance=2.0, steps=3, image=picture, strength=0.5, seed=2)
    close(pixels(got), want)


def test_inpaint_matches_z_image_inpaint_pipeline(z_model):
    mine, ref = ours(z_model), reference(z_model, "ZImageInpaintPipeline")
    picture, mask = _picture(1), box_mask((W, H))
    args = dict(prompt="a green pear", guidance_scale=0.0, num_inference_steps=3, strength=0.7)  # CFG is held above
    got = pixels(mine("a green pear", guidance=0.0, steps=3, image=picture, mask=mask, mask_blur=0,
                      strength=0.7, seed=4))  # fmt: skip
    close(got, inpaint_pixels(ref, picture, mask, 4, **args))
    assert repainted(got, picture)


def test_a_family_is_told_from_its_folder(z_model):
    from latentdiff.families.registry import family_of_folder

    assert family_of_folder(z_model).name == "z-image"
