"""The SD 3/3.5 family's pieces: detection from a folder's configs, the variants told from the
transformer's config, loading the three text encoders, the refusals that are one line (a UNet
scheduler, a size the patches cannot cover, clip skip, true CFG, a transformer class no family
knows), and the model hash covering the transformer."""

from __future__ import annotations

import json
import shutil

import pytest

from latentdiff.errors import ModelError, UsageError


@pytest.fixture(scope="module")
def sd3_medium(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("sd3") / "medium", "sd3.5-medium")


def test_an_sd3_folder_is_told_from_its_configs(sd3_medium, tiny_sd1):
    from latentdiff.families.registry import family_of_folder

    assert family_of_folder(sd3_medium).name == "sd3"
    assert family_of_folder(tiny_sd1).name == "sd"
    index = json.loads((sd3_medium / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]


def test_an_sd3_folder_loads_its_three_encoders_and_variant(sd3_medium):
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel, T5TokenizerFast

    from latentdiff.families.registry import family_of
    from latentdiff.models.assemble import load_components

    c = load_components(sd3_medium)
    assert isinstance(c.unet, SD3Transformer2DModel)
    assert isinstance(c.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(c.text_encoder_2, CLIPTextModelWithProjection)
    assert isinstance(c.text_encoder_3, T5EncoderModel) and isinstance(c.tokenizer_3, T5TokenizerFast)
    assert family_of(c).variant(c) == "sd3.5-medium"


@pytest.mark.parametrize("variant", ["sd3.5-medium", "sd3.5-large", "sd3-medium"])
def test_the_variant_is_told_from_the_transformer(variant):
    from types import SimpleNamespace

    from latentdiff.families.sd3 import SD3

    family = SD3()
    c = SimpleNamespace(**family.tiny(variant))
    assert family.variant(c) == variant
    assert family.defaults(c)["steps"] in (28, 40)


def test_sd3_refusals_are_one_line(sd3_medium):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(sd3_medium, device="cpu", dtype="fp32")
    pipe.progress = False
    for kwargs, words in (
        ({"scheduler": "dpm++2m"}, "SD 3/3.5 samples with its own flow-matching Euler scheduler"),
        ({"width": 34}, "width 34 is not a multiple of 4"),  # the tiny VAE's 2 x the 2x2 patch
        ({"clip_skip": 2}, "clip_skip does not apply to SD3"),
        ({"true_cfg": 2.0}, "true_cfg 2 is for guidance-distilled models"),
    ):
        with pytest.raises(UsageError, match=words):
            pipe("a cat", **{"steps": 1, "width": 32, "height": 32, **kwargs})
    assert pipe.defaults() == {"steps": 40, "guidance": 4.5}


def test_hires_fix_runs_its_second_pass_on_sd3(sd3_medium):
    import numpy as np

    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(sd3_medium, device="cpu", dtype="fp32")
    pipe.progress = False
    base = pipe("a red apple", steps=2, width=32, height=32, seed=1)[0]
    for upscaler in ("latent", "lanczos"):
        (big,) = pipe("a red apple", steps=2, width=32, height=32, seed=1, hires=2.0, hires_upscaler=upscaler)
        assert big.size == (64, 64)
        small = np.asarray(big.resize((32, 32)), dtype=float)
        assert 0 < np.abs(small - np.asarray(base, dtype=float)).mean() < 100  # redrawn, not a different picture


def test_a_transformer_of_an_unknown_class_is_one_error(sd3_medium, tmp_path):
    from latentdiff.models.configs import read_configs

    broken = tmp_path / "broken"
    shutil.copytree(sd3_medium, broken)
    config = broken / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "HiDreamImageTransformer2DModel"}))
    with pytest.raises(ModelError, match="transformer class 'HiDreamImageTransformer2DModel' is not supported"):
        read_configs(broken)
    shutil.rmtree(broken / "transformer")
    with pytest.raises(ModelError, match="lacks component folder.*transformer"):
        read_configs(broken)


def test_the_model_hash_covers_the_transformer_and_t5(sd3_medium, tmp_path):
    from latentdiff.models.fingerprint import model_hash

    copy = tmp_path / "copy"
    shutil.copytree(sd3_medium, copy)
    before = model_hash(copy)
    for part in ("transformer", "text_encoder_3"):
        (weights,) = (copy / part).glob("*.safetensors")
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        assert model_hash(copy) != before
        before = model_hash(copy)


@pytest.mark.parametrize(
    "blocks, extra, words",
    [
        (
            24,
            ["x_block.attn2.qkv.weight", "x_block.attn.ln_q.weight"],
            "an SD 3.5 medium transformer alone (it lacks CLIP-L, CLIP-G, VAE",
        ),
        (38, ["x_block.attn.ln_q.weight"], "an SD 3.5 large transformer with CLIP-L, CLIP-G, VAE:"),
        (24, [], "an SD 3 medium transformer with CLIP-L, CLIP-G, T5, VAE:"),
    ],
)
def test_an_sd3_single_file_is_one_line_naming_what_it_holds_and_lacks(blocks, extra, words):
    from latentdiff.formats.detect import detect

    names = [
        f"model.diffusion_model.joint_blocks.{i}.{k}"
        for i in range(blocks)
        for k in ["context_block.attn.qkv.weight", *extra]
    ]
    if "alone" not in words:
        names += ["text_encoders.clip_l.transformer.x", "text_encoders.clip_g.transformer.x", "first_stage_model.x"]
    if "T5" in words:
        names += ["text_encoders.t5xxl.transformer.x"]
    with pytest.raises(ModelError, match="loads as --model FILE --components DIR") as e:
        detect(dict.fromkeys(names, [2, 2]), "m.safetensors")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_convert_writes_an_sd3_folder_as_its_transformer_file_and_back(sd3_medium, tmp_path):
    """The transformer alone in Stability's layout; back to a folder with the others from --components."""
    import torch
    from safetensors import safe_open

    from latentdiff.errors import UsageError
    from latentdiff.formats.convert import convert
    from latentdiff.models.assemble import load_components

    f = convert(sd3_medium, tmp_path / "sd3.safetensors")
    with safe_open(str(f), "pt") as s:
        assert "joint_blocks.0.x_block.attn.qkv.weight" in s.keys()
    with pytest.raises(UsageError, match="SD 3/3.5 transformer alone.*--components"):
        convert(f, tmp_path / "back")
    back = load_components(convert(f, tmp_path / "back", components=sd3_medium)).unet.state_dict()
    want = load_components(sd3_medium).unet.state_dict()
    assert back.keys() == want.keys() and all(torch.equal(back[k], want[k]) for k in want)


def test_a_prompt_past_clips_window_is_cut_as_diffusers_cuts_it_and_said_so(sd3_medium, capsys):
    from latentdiff import Pipeline
    from latentdiff.runtime.device import notice

    notice.cache_clear()
    pipe = Pipeline.from_pretrained(sd3_medium, device="cpu", dtype="fp32")
    pipe.progress = False
    pipe("a red apple " * 40, steps=1, width=16, height=16)
    err = capsys.readouterr().err
    assert "a prompt is longer than the 77 tokens CLIPTokenizer reads here; the rest is cut" in err
    assert err.count("77 tokens CLIPTokenizer") == 1  # once, not per encoder or step


def test_t5_keeps_its_fp32_layers_in_fp16_as_transformers_loads_it(sd3_medium):
    import torch
    from transformers import T5EncoderModel

    from latentdiff import Pipeline

    # loaded in fp16 (models/assemble.py) and placed in fp16 (Pipeline.place_on): wo read as fp32 and kept so
    ours = Pipeline.from_pretrained(sd3_medium, device="cpu", dtype="fp16").components.text_encoder_3
    theirs = T5EncoderModel.from_pretrained(sd3_medium / "text_encoder_3", dtype=torch.float16)
    dtypes = {name: p.dtype for name, p in theirs.named_parameters()}
    assert {name: p.dtype for name, p in ours.named_parameters()} == dtypes
    assert dtypes["encoder.block.0.layer.1.DenseReluDense.wo.weight"] == torch.float32  # the rest fp16
    ids = torch.tensor([[5, 9, 14, 1]])
    with torch.no_grad():
        assert torch.equal(ours(ids)[0], theirs(ids)[0])
