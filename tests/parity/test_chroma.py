"""Chroma against diffusers' ChromaPipeline on a tiny random model (fp32, CPU): T5 alone with its
text mask, real CFG with the negative prompt, Flux.1's packing and schedule, within 1/255."""

from __future__ import annotations

import pytest
from flow_parity import close as _close
from flow_parity import ours as _ours
from flow_parity import pixels as _pixels
from flow_parity import reference, reference_pixels

W, H = 48, 32


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("chroma") / "m", "chroma", seed=2)


def test_chroma_matches_chroma_pipeline(chroma):
    from latentdiff.families.registry import family_of_folder

    assert family_of_folder(chroma).name == "chroma"
    ours, ref = _ours(chroma), reference(chroma, "ChromaPipeline")
    assert ours.defaults() == {"steps": 35, "guidance": 5.0}
    got = ours("a red apple", "blue sky", guidance=4.0, steps=3, width=W, height=H, num_images=2, seed=5)
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=4.0, num_inference_steps=3)
    _close(_pixels(got), reference_pixels(ref, 5, 2, (W, H), **args))
