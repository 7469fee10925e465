"""The Flux family's pieces against diffusers' own: detection from a folder's configs, the 2x2
packing and position ids, the schedule's shift, and the loading of a Flux folder."""

from __future__ import annotations

import json

import pytest
import torch

from latentdiff.errors import ModelError


@pytest.fixture(scope="module")
def flux_schnell(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("flux") / "schnell", "flux-schnell")


def test_a_flux_folder_is_told_from_its_configs(flux_schnell, tiny_sd1):
    from latentdiff.families.registry import family_of_folder

    assert family_of_folder(flux_schnell).name == "flux"
    assert family_of_folder(tiny_sd1).name == "sd"


def test_a_flux_folder_loads_with_its_t5_and_variant(flux_schnell):
    from transformers import T5EncoderModel, T5TokenizerFast

    from latentdiff.families.registry import family_of
    from latentdiff.models.assemble import load_components

    c = load_components(flux_schnell)
    assert isinstance(c.text_encoder_2, T5EncoderModel) and isinstance(c.tokenizer_2, T5TokenizerFast)
    # T5 stores its token embedding once; loading ties the encoder's copy to it
    assert c.text_encoder_2.encoder.embed_tokens.weight is c.text_encoder_2.shared.weight
    assert family_of(c).variant(c) == "flux-schnell"


def test_a_flux_folder_without_its_transformer_is_one_error(flux_schnell, tmp_path):
    from latentdiff.models.configs import check_model_dir

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((flux_schnell / "model_index.json").read_text())
    with pytest.raises(ModelError, match="lacks component folder.*transformer"):
        check_model_dir(broken)


def test_packing_and_ids_are_diffusers(flux_schnell):
    from diffusers import FluxPipeline

    from latentdiff.families.flux import image_ids, pack, unpack

    x = torch.randn(3, 16, 6, 10)
    packed = FluxPipeline._pack_latents(x, 3, 16, 6, 10)
    assert torch.equal(pack(x), packed)
    assert torch.equal(unpack(packed, 6, 10), x)
    assert torch.equal(
        image_ids(3, 5, "cpu", torch.float32), FluxPipeline._prepare_latent_image_ids(3, 3, 5, "cpu", torch.float32)
    )


def test_the_shift_is_diffusers_calculate_shift(flux_schnell):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift as reference

    from latentdiff.families.flow import calculate_shift

    config = json.loads((flux_schnell / "scheduler" / "scheduler_config.json").read_text())
    for tokens in (16, 256, 1024, 4096, 9000):
        assert calculate_shift(tokens, config) == pytest.approx(reference(tokens, 256, 4096, 0.5, 1.15), abs=0)


def test_flux_refuses_a_unet_scheduler_and_a_size_it_cannot_patch(flux_schnell):
    from latentdiff import Pipeline
    from latentdiff.errors import UsageError

    pipe = Pipeline.from_pretrained(flux_schnell, device="cpu", dtype="fp32")
    with pytest.raises(UsageError, match="flow-matching Euler scheduler; scheduler 'dpm\\+\\+2m'"):
        pipe("a cat", scheduler="dpm++2m", steps=1, width=32, height=32)
    with pytest.raises(UsageError, match="width 34 is not a multiple of 4"):  # the tiny VAE's 2 x the 2x2 patch
        pipe("a cat", steps=1, width=34, height=32)
    assert pipe.defaults() == {"steps": 4, "guidance": 0.0}  # schnell: 4 steps, no guidance input
    # The sampler table's names (A1111's, with a schedule type) and options pass through the family's check.
    for kwargs, words in (
        ({"scheduler": "DPM++ 2M Karras"}, "scheduler 'dpm\\+\\+2m_karras' is for the UNet"),
        ({"scheduler": "Euler"}, "scheduler 'euler' is for the UNet"),
        ({"schedule": "karras"}, "schedule='karras' needs a sampler"),
        ({"eta": 0.5}, "eta applies to the samplers"),
    ):
        with pytest.raises(UsageError, match=words):
            pipe("a cat", steps=1, width=32, height=32, **kwargs)


def test_a_forge_flux_line_keeps_the_models_own_scheduler():
    from latentdiff.images.infotext import params_from_a1111

    line = "a cat\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1"
    params, notes = params_from_a1111(line)
    assert params["scheduler"] is None and not any("Forge" in n for n in notes)
    params, notes = params_from_a1111(line.replace("Sampler: Euler", "Sampler: DPM++ 2M"))
    assert params["scheduler"] is None and any("Forge's Flux sampler 'DPM++ 2M'" in n for n in notes)
    sd = params_from_a1111("a cat\nSteps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Seed: 1")[0]
    assert sd["scheduler"] == "euler_karras"  # an A1111 line without Forge's Flux field: the table's choice


def test_flux_infotext_is_forges_and_reads_back():
    from latentdiff.images.infotext import format_infotext, params_from_a1111

    record = {"prompt": "a cat", "negative_prompt": "dog", "steps": 20, "guidance": 3.5, "seed": 1, "width": 64,
              "height": 48, "sampler": "Euler", "guidance_embedded": True, "true_cfg": 2.0}  # fmt: skip
    line = format_infotext(record)
    assert "CFG scale: 2.0, Distilled CFG Scale: 3.5," in line
    params, _ = params_from_a1111(line)
    assert (params["guidance"], params["true_cfg"]) == (3.5, 2.0)
    plain = format_infotext({**record, "guidance_embedded": False, "true_cfg": 1.0})
    assert "CFG scale: 3.5," in plain and "Distilled" not in plain  # the UNet families' line is unchanged


def test_convert_writes_a_flux_folder_as_its_transformer_file(flux_schnell, tmp_path):
    """The transformer alone in Black Forest Labs' layout (flux1-schnell.safetensors' names)."""
    from safetensors import safe_open

    from latentdiff.formats.convert import convert

    f = convert(flux_schnell, tmp_path / "flux.safetensors")
    with safe_open(str(f), "pt") as s:
        names = set(s.keys())
    assert {"img_in.weight", "double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"} <= names
    assert not any(k.startswith("guidance_in.") for k in names)  # schnell has no guidance embedding
