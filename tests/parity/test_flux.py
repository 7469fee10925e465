"""Flux.1 against diffusers' FluxPipeline / FluxImg2ImgPipeline on tiny random models (fp32, CPU):
the same folder loaded by both, the same seeds (image k of a call: seed + k), within 1/255."""

from __future__ import annotations

import numpy as np
import pytest
from flow_parity import close as _close
from flow_parity import ours as _ours
from flow_parity import pixels as _pixels
from flow_parity import reference, reference_pixels
from PIL import Image

W, H = 48, 32  # width != height: the packing and the position ids must not transpose


@pytest.fixture(scope="module")
def flux_models(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("flux")
    return {v: make_tiny(root / v, f"flux-{v}", seed=i) for i, v in enumerate(("dev", "schnell"))}


def _reference(path, cls_name="FluxPipeline"):
    return reference(path, cls_name)


def _reference_pixels(pipe, seed: int, n: int, **kwargs) -> np.ndarray:
    return reference_pixels(pipe, seed, n, (W, H), **kwargs)


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_text_to_image_matches_flux_pipeline(flux_models, variant):
    path = flux_models[variant]
    ours, ref = _ours(path), _reference(path)
    for seed, n in ((5, 2), (11, 1)):
        got = _pixels(ours("a red apple", guidance=4.0, steps=3, width=W, height=H, num_images=n, seed=seed))
        _close(got, _reference_pixels(ref, seed, n, prompt="a red apple", guidance_scale=4.0, num_inference_steps=3))


def test_dev_embeds_guidance_and_schnell_ignores_it(flux_models):
    for variant, differs in (("dev", True), ("schnell", False)):
        pipe = _ours(flux_models[variant])
        a, b = (_pixels(pipe("a cat", guidance=g, steps=2, width=W, height=H, seed=3)) for g in (1.0, 6.0))
        assert bool(np.abs(a - b).max() > 0) is differs


def test_true_cfg_matches_flux_pipeline(flux_models):
    path = flux_models["dev"]
    ours, ref = _ours(path), _reference(path)
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=3.5, num_inference_steps=3)
    want = _reference_pixels(ref, 7, 2, true_cfg_scale=2.5, **args)
    got = ours("a red apple", "blue sky", guidance=3.5, true_cfg=2.5, steps=3, width=W, height=H, num_images=2, seed=7)
    _close(_pixels(got), want)
    plain = _pixels(ours("a red apple", "blue sky", guidance=3.5, steps=3, width=W, height=H, num_images=2, seed=7))
    assert np.abs(plain - want).max() > 1  # true CFG is off by default


def test_img2img_matches_flux_img2img_pipeline(flux_models):
    path = flux_models["dev"]
    ours, ref = _ours(path), _reference(path, "FluxImg2ImgPipeline")
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    # 4 steps at 0.6: FluxImg2ImgPipeline denoises 3 (int(4 - 2.4) = 1 skipped), SD's pipelines 2
    args = dict(prompt="a green pear on a table", guidance_scale=4.0, num_inference_steps=4, strength=0.6)
    # FluxImg2ImgPipeline encodes a one-picture batch with the first generator only; our image k uses
    # seed + k throughout (it does not depend on its batch), as diffusers called image by image.
    want = np.concatenate([_reference_pixels(ref, seed, 1, image=picture, **args) for seed in (2, 3)])
    got = ours("a green pear on a table", guidance=4.0, steps=4, image=picture, strength=0.6, num_images=2, seed=2)
    _close(_pixels(got), want)
