"""Stable unCLIP against diffusers' StableUnCLIPImg2ImgPipeline (variations from a picture, or a given
zero embedding) and StableUnCLIPPipeline (text through the prior) on one tiny random model (fp32, CPU):
the same folder loaded by both, the same seeds (image k of a call: seed + k, drawing the prior's
latents and steps, the embedding's noise, then the image's latents), within 1/255; noise level 0 too."""

from __future__ import annotations

import numpy as np
import pytest
from flow_parity import close, ours, pixels, reference, reference_pixels
from PIL import Image

W = H = 32


@pytest.fixture(scope="module")
def unclip_model(tiny_unclip):
    return tiny_unclip


@pytest.fixture(scope="module")
def unclip_pipes(unclip_model):
    return ours(unclip_model), reference(unclip_model, "StableUnCLIPImg2ImgPipeline")


def _picture(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


@pytest.mark.parametrize("level", [0])  # other levels: the prior (100) and the Kandinsky prior (10) tests
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
    assert pipe.components.unclip["prior"].clip_std.abs().min() > 0  # the prior's embeddings are not all zero
    info = got[1].info["latentdiff"]
    assert (info["image_embedding"], info["prior_steps"], info["prior_guidance"]) == ("prior", 3, 5.0)


@pytest.fixture(scope="module")
def decoder_alone(tmp_path_factory):
    """tiny_unclip (conftest.py) without its prior and image encoder: the decoder on a zero image embedding."""
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("unclip") / "decoder", "unclip-decoder", seed=3)


def test_zero_embedding_matches_img2img_given_zeros(decoder_alone, unclip_pipes):
    import torch

    pipe, ref = ours(decoder_alone), unclip_pipes[1]
    got = pipe("photo of a cat", guidance=2.0, steps=2, width=W, height=H, seed=4)
    zeros = torch.zeros(1, 32)
    args = dict(prompt="photo of a cat", guidance_scale=2.0, num_inference_steps=2, image_embeds=zeros)
    close(pixels(got), reference_pixels(ref, 4, 1, (W, H), **args))
    assert got[0].info["latentdiff"]["image_embedding"] == "zeros"


@pytest.fixture(scope="module")
def kandinsky_prior(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_prior

    return make_tiny_prior(tmp_path_factory.mktemp("unclip") / "prior", seed=5)


def test_prior_matches_kandinsky22_prior_pipeline(kandinsky_prior):
    import torch

    from latentdiff.families.unclip import prior_embeddings
    from latentdiff.models.assemble import load_prior

    parts, ref = load_prior(kandinsky_prior), reference(kandinsky_prior, "KandinskyV22PriorPipeline")
    for guidance, n in ((1.0, 1), (4.0, 2)):
        gens = [torch.Generator().manual_seed(9 + k) for k in range(n)]
        got = prior_embeddings(parts, ["a red apple"] * n, 3, guidance, gens, kandinsky=True)
        gens = [torch.Generator().manual_seed(9 + k) for k in range(n)]
        want = ref("a red apple", num_images_per_prompt=n, num_inference_steps=3, guidance_scale=guidance,
                   generator=gens if n > 1 else gens[0]).image_embeds  # fmt: skip
        assert want.std() > 0.1 and torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_kandinsky_prior_feeds_the_decoder_in_one_call(kandinsky_prior, unclip_pipes):
    """The prior, then the decoder, one generator through both: diffusers' two pipelines in a row."""
    import torch

    pipe, decoder = unclip_pipes
    prior = reference(kandinsky_prior, "KandinskyV22PriorPipeline")
    got = pipe("a red apple", guidance=3.0, steps=2, width=W, height=H, seed=6, prior=str(kandinsky_prior),
               prior_steps=2, prior_guidance=4.0, noise_level=10)  # fmt: skip
    g = torch.Generator().manual_seed(6)
    embeds = prior("a red apple", num_inference_steps=2, guidance_scale=4.0, generator=g).image_embeds
    out = decoder(prompt="a red apple", image_embeds=embeds, noise_level=10, guidance_scale=3.0, num_inference_steps=2,
                  generator=g, width=W, height=H, output_type="np")  # fmt: skip
    close(pixels(got), np.round(out.images * 255))
    info = got[0].info["latentdiff"]
    assert (info["prior"], info["prior_steps"], info["prior_guidance"]) == (str(kandinsky_prior), 2, 4.0)


def test_saved_model_loads_in_both_diffusers_pipelines(unclip_pipes, tmp_path):
    import diffusers
    import torch

    pipe = unclip_pipes[0]
    out = pipe.save_pretrained(tmp_path / "saved")
    variations = diffusers.StableUnCLIPImg2ImgPipeline.from_pretrained(out)
    text = diffusers.StableUnCLIPPipeline.from_pretrained(out)
    parts = pipe.components.unclip
    assert torch.equal(text.prior.clip_std, parts["prior"].clip_std)
    assert torch.equal(variations.image_normalizer.std, parts["image_normalizer"].std)
    assert variations.image_encoder.config.projection_dim == parts["image_encoder"].config.projection_dim
    again = ours(out)
    assert again.family.name == "unclip" and sorted(again.components.unclip) == sorted(parts)


@pytest.mark.parametrize("upscaler", ["latent", "lanczos"])
def test_hires_pass_keeps_the_image_embedding(unclip_pipes, upscaler):
    """Every UNet call of both passes gets the one noised embedding (zeros for the unconditional row)."""
    import torch

    pipe, seen = unclip_pipes[0], []
    hook = pipe.components.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["class_labels"].clone()), with_kwargs=True
    )
    try:
        (big,) = pipe("a red apple", guidance=3.0, steps=2, width=W, height=H, seed=1, prior_steps=2, hires=2,
                      hires_upscaler=upscaler, hires_steps=2)  # fmt: skip
    finally:
        hook.remove()
    assert big.size == (2 * W, 2 * H) and len(seen) == 3  # 2 steps, then 1 at hires strength 0.5
    assert all(torch.equal(labels, seen[0]) for labels in seen)
    assert seen[0][0].abs().sum() == 0 and seen[0][1].abs().sum() > 0
