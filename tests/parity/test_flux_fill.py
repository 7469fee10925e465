"""Flux Fill against diffusers' FluxFillPipeline on a tiny random model (fp32, CPU): the masked
image's latents and the full-resolution mask packed beside the latents, the init image encoded
even at strength 1 (drawing from the generator, as diffusers), within 1/255 inside the mask; ours
pastes the result over the input outside it (diffusers returns the decoded image as it is)."""

from __future__ import annotations

import numpy as np
import pytest
from flow_parity import close as _close
from flow_parity import ours as _ours
from flow_parity import picture, reference, reference_pixels
from flow_parity import pixels as _pixels
from PIL import Image

W, H = 48, 32


@pytest.fixture(scope="module")
def fill(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("flux") / "fill", "flux-fill", seed=2)


def _picture() -> Image.Image:
    return picture((W, H), 1)


def _mask() -> Image.Image:
    m = np.zeros((H, W), dtype=np.uint8)
    m[8:24, 16:40] = 255
    return Image.fromarray(m)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_fill_matches_flux_fill_pipeline(fill, strength):
    from latentdiff.workflows.source import soft_mask

    ours, ref = _ours(fill), reference(fill, "FluxFillPipeline")
    assert ours.family.variant(ours.components) == "flux-fill" and ours.defaults() == {"steps": 50, "guidance": 30.0}
    args = dict(prompt="a green pear", image=_picture(), mask_image=_mask(), guidance_scale=30.0, strength=strength)
    raw = reference_pixels(ref, 4, 1, (W, H), num_inference_steps=3, **args)
    want = [Image.composite(Image.fromarray(r.astype(np.uint8)), _picture(), soft_mask(_mask(), 0)) for r in raw]
    got = ours("a green pear", guidance=30.0, steps=3, image=_picture(), mask=_mask(), mask_blur=0,
               strength=strength, seed=4)  # fmt: skip
    _close(_pixels(got), _pixels(want))
