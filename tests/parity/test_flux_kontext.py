"""Flux Kontext against diffusers' FluxKontextPipeline on a tiny random model (fp32, CPU): the init
image is the reference the model edits (its latents as extra tokens at time index 1, encoded at
the VAE's mode), the output starts from noise, within 1/255. A Kontext model refuses, in one line,
a run without an image, with a mask or a strength below 1."""

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
def kontext(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("flux") / "kontext", "flux-kontext", seed=3)


def _picture() -> Image.Image:
    return picture((W, H), 1)


def test_kontext_matches_flux_kontext_pipeline(kontext):
    ours, ref = _ours(kontext), reference(kontext, "FluxKontextPipeline")
    assert ours.family.variant(ours.components) == "flux-kontext"
    got = ours("make it red", guidance=3.5, steps=3, image=_picture(), num_images=2, seed=4)
    # the reference image kept at the output's size (diffusers would resize both to ~1 megapixel)
    kwargs = dict(image=_picture(), guidance_scale=3.5, num_inference_steps=3, _auto_resize=False, max_area=W * H)
    _close(_pixels(got), reference_pixels(ref, 4, 2, (W, H), prompt="make it red", **kwargs))


def test_kontext_refuses_a_run_it_cannot_make_in_one_line(kontext):
    from latentdiff.errors import UsageError

    pipe = _ours(kontext)
    mask = Image.new("L", (W, H), 255)
    for kwargs in ({}, {"image": _picture(), "mask": mask}, {"image": _picture(), "strength": 0.5}):
        with pytest.raises(UsageError, match="a Kontext model edits the image it is given") as e:
            pipe("make it red", steps=1, width=W, height=H, **kwargs)
        assert "\n" not in str(e.value)


def test_kontext_records_strength_one_and_from_replays_it(kontext, tmp_path, run_main):
    _picture().save(tmp_path / "ref.png")
    argv = ["generate", "make it red", "--model", kontext, "--init-image", tmp_path / "ref.png", "--steps", "2"]
    code, out, err = run_main([*argv, "--seed", "3", "--out", tmp_path / "a", "--quiet"])
    assert code == 0, err
    path = out.split()[0]
    assert "Distilled CFG Scale: 3.5, Seed: 3" in Image.open(path).text["parameters"]
    assert "Denoising strength: 1.0" in Image.open(path).text["parameters"]  # the default, which --from passes back
    code, out, err = run_main(["generate", "--from", path, "--out", tmp_path / "b", "--quiet"])
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out.split()[0])), np.asarray(Image.open(path)))
