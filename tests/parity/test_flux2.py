"""FLUX.2 klein against diffusers' Flux2KleinPipeline on tiny random models (fp32, CPU): the same
folder loaded by both, the same seeds (image k of a call: seed + k), within 1/255. The base model
guides with CFG against the empty prompt; a distilled one (is_distilled in model_index.json) takes
no guidance, as diffusers ignores it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from flow_parity import close as _close
from flow_parity import ours as _ours
from flow_parity import pixels as _pixels
from flow_parity import reference, reference_pixels

W, H = 48, 32  # width != height: the tokens' order and the position ids must not transpose


@pytest.fixture(scope="module")
def klein(tiny_klein):
    return tiny_klein


@pytest.fixture(scope="module")
def klein_distilled(klein, tmp_path_factory):
    """The same weights marked step-distilled, as FLUX.2-klein-4B's model_index.json marks them."""
    path = tmp_path_factory.mktemp("flux2") / "distilled"
    shutil.copytree(klein, path)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "is_distilled": True}))
    return path


def _reference_pixels(pipe, seed: int, n: int, **kwargs) -> np.ndarray:
    return reference_pixels(pipe, seed, n, (W, H), **kwargs)


def test_text_to_image_with_cfg_matches_flux2_klein_pipeline(klein):
    ours, ref = _ours(klein), reference(klein, "Flux2KleinPipeline")
    got = _pixels(ours("a red apple", guidance=4.0, steps=3, width=W, height=H, num_images=2, seed=5))
    want = _reference_pixels(ref, 5, 2, prompt="a red apple", guidance_scale=4.0, num_inference_steps=3)
    _close(got, want)  # diffusers guides at 4 (two transformer calls a step): so the guidance is used


def test_a_distilled_klein_ignores_guidance_as_diffusers(klein_distilled):
    ours, ref = _ours(klein_distilled), reference(klein_distilled, "Flux2KleinPipeline")
    assert ours.defaults() == {"steps": 4, "guidance": 1.0}
    got = _pixels(ours("a green pear on a table", guidance=4.0, steps=2, width=W, height=H, seed=9))
    _close(
        got, _reference_pixels(ref, 9, 1, prompt="a green pear on a table", guidance_scale=4.0, num_inference_steps=2)
    )
    again = _pixels(ours("a green pear on a table", guidance=1.0, steps=2, width=W, height=H, seed=9))
    assert np.array_equal(got, again)
