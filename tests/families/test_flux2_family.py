"""The FLUX.2 family's pieces against diffusers' own: detection from a folder's configs, the 2x2
patching, the position ids, the schedule's shift, the VAE seen in the patched latent space, and the
loading of a klein folder (a FLUX.2 dev folder is refused in one line)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from latentdiff.errors import ModelError


@pytest.fixture(scope="module")
def klein(tiny_klein):
    return tiny_klein


def test_a_klein_folder_is_told_from_its_configs_and_loads(klein):
    from transformers import Qwen3ForCausalLM

    from latentdiff.families.registry import family_of, family_of_folder
    from latentdiff.models.assemble import load_components

    assert family_of_folder(klein).name == "flux2"
    c = load_components(klein)
    assert isinstance(c.text_encoder, Qwen3ForCausalLM) and type(c.vae).__name__ == "AutoencoderKLFlux2"
    assert family_of(c).name == "flux2" and c.index == {"is_distilled": False, "_class_name": "Flux2KleinPipeline"}


def test_patching_ids_and_shift_are_diffusers():
    from diffusers import Flux2KleinPipeline as P
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    from latentdiff.families.flux2 import empirical_mu, position_ids
    from latentdiff.families.flux2_vae import patchify, unpatchify

    z = torch.randn(2, 3, 6, 10)
    assert torch.equal(patchify(z), P._patchify_latents(z)) and torch.equal(unpatchify(patchify(z)), z)
    x = torch.randn(2, 12, 3, 5)
    assert torch.equal(position_ids(1, 3, 5, 1, 2, "cpu"), P._prepare_latent_ids(x))
    assert torch.equal(position_ids(1, 1, 1, 7, 2, "cpu"), P._prepare_text_ids(torch.zeros(2, 7, 4)))
    for tokens, steps in ((6, 2), (256, 4), (4096, 50), (4400, 28), (16384, 8)):
        assert empirical_mu(tokens, steps) == pytest.approx(compute_empirical_mu(tokens, steps), abs=0)


def test_the_vae_view_is_the_patched_normalised_space(klein):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(klein, device="cpu", dtype="fp32")
    view = pipe.components.vae
    vae = view.vae
    assert (view.config.latent_channels, pipe.scale_factor, view.config.scaling_factor) == (16, 4, 1.0)
    assert pipe.family.size_step(pipe.components, pipe.scale_factor) == 4 and pipe.native_size == 256
    z = torch.randn(1, 4, 8, 12)
    with torch.no_grad():
        latents = view.to_loop(z)
        assert latents.shape == (1, 16, 4, 6) and torch.allclose(view.from_loop(latents), z, atol=1e-5)
        assert torch.allclose(view.decode(latents).sample, vae.decode(z).sample, atol=1e-5)
        pixels = torch.rand(1, 3, 16, 24) * 2 - 1
        assert torch.allclose(
            view.encode(pixels).latent_dist.mode(), view.to_loop(vae.encode(pixels).latent_dist.mode())
        )


def test_a_flux2_dev_folder_is_refused_in_one_line(klein, tmp_path):
    from latentdiff.models.configs import read_configs

    dev = tmp_path / "dev"
    shutil.copytree(klein, dev)
    index = json.loads((dev / "model_index.json").read_text())
    index.update(_class_name="Flux2Pipeline", text_encoder=["transformers", "Mistral3ForConditionalGeneration"])
    (dev / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        ModelError, match="is a Flux2Pipeline model, not a model this can generate with; supported:.*FLUX.2 klein"
    ):
        read_configs(dev)


def test_a_flux2_single_file_is_named_from_its_tensors():
    from latentdiff.formats.detect import describe

    bfl = [
        "double_blocks.0.img_attn.qkv.weight",
        "double_stream_modulation_img.lin.weight",
        "single_blocks.0.linear1.weight",
    ]
    diffusers = ["transformer_blocks.0.attn.to_q.weight", "single_stream_modulation.linear.weight"]
    assert describe(bfl) == describe(diffusers) == "a FLUX.2 transformer"
    assert describe(["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"]) == "Flux"
