"""Stable unCLIP against diffusers' StableUnCLIPImg2ImgPipeline (variations from a picture, or a given
zero embedding) and StableUnCLIPPipeline (text through the prior) on one tiny random model (fp32, CPU):
the same folder loaded by both, the same seeds (image k of a call: seed + k, drawing the prior's
latents and steps, the embedding's noise, then the image's latents), within 1/255; noise level 0 too."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from flow_parity import close, ours, pixels, reference, reference_pixels
from PIL import Image

W = H = 32


@pytest.fixture(scope="module")
def unclip_model(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("unclip") / "m", "unclip", seed=3)


@pytest.fixture(scope="module")
def unclip_pipes(unclip_model):
    return ours(unclip_model), reference(unclip_model, "StableUnCLIPImg2ImgPipeline")


def _picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


@pytest.mark.parametrize("level", [0, 300])
def test_variations_match_stable_unclip_img2img(unclip_pipes, tmp_path, level):
    pipe, ref = unclip_pipes
    path = tmp_path / "in.png"
    _picture(level).save(path)
    got = pipe("a red apple", "blue sky", guidance=3.0, steps=3, width=W, height=H, seed=7,
               variations=str(path), noise_level=level)  # fmt: skip
    args = dict(prompt="a red apple", negative_prompt="blue sky", guidance_scale=3.0, num_inference_steps=3)
    close(pixels(got), reference_pixels(ref, 7, 1, (W, H), image=Image.open(path), noise_level=level, **args))
    assert got[0].info["latentdiff"]["noise_level"] == level
    assert got[0].info["latentdiff"]["variations"] == str(path)


def test_prior_matches_stable_unclip_pipeline(unclip_model, unclip_pipes):
    pipe, ref = unclip_pipes[0], reference(unclip_model, "StableUnCLIPPipeline")
    got = pipe("a green pear on a table", guidance=4.0, steps=2, width=W, height=H, seed=2, num_images=2,
               prior_steps=3, prior_guidance=5.0, noise_level=100)  # fmt: skip
    args = dict(prompt="a green pear on a table", guidance_scale=4.0, num_inference_steps=2)
    prior = dict(prior_num_inference_steps=3, prior_guidance_scale=5.0, noise_level=100)
    close(pixels(got), reference_pixels(ref, 2, 2, (W, H), **args, **prior))
    info = got[1].info["latentdiff"]
    assert (info["image_embedding"], info["prior_steps"], info["prior_guidance"]) == ("prior", 3, 5.0)


@pytest.fixture(scope="module")
def decoder_alone(unclip_model, tmp_path_factory):
    """The model without its prior and image encoder: the decoder on a zero image embedding."""
    path = tmp_path_factory.mktemp("unclip") / "decoder"
    shutil.copytree(unclip_model, path)
    index = json.loads((path / "model_index.json").read_text())
    for name in (
        "prior",
        "prior_text_encoder",
        "prior_tokenizer",
        "prior_scheduler",
        "image_encoder",
        "feature_extractor",
    ):
        shutil.rmtree(path / name)
        index.pop(name)
    (path / "model_index.json").write_text(
        json.dumps({**index, "image_encoder": [None, None], "feature_extractor": [None, None]})
    )
    return path


def test_zero_embedding_matches_img2img_given_zeros(decoder_alone, unclip_pipes):
    import torch

    pipe, ref = ours(decoder_alone), unclip_pipes[1]
    got = pipe("photo of a cat", guidance=2.0, steps=2, width=W, height=H, seed=4)
    zeros = torch.zeros(1, 32)
    args = dict(prompt="photo of a cat", guidance_scale=2.0, num_inference_steps=2, image_embeds=zeros)
    close(pixels(got), reference_pixels(ref, 4, 1, (W, H), **args))
    assert got[0].info["latentdiff"]["image_embedding"] == "zeros"
