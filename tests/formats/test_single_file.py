"""Single-file checkpoints (A1111 layout), `latentdiff convert`, --vae, and unsupported files."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import run_cli_here

from latentdiff import Pipeline
from latentdiff.errors import ModelError
from latentdiff.formats.convert import convert
from latentdiff.models.weights import load_component_state
from tests.conftest import run_cli

SIZE = dict(width=32, height=32)


def max_pixel_diff(a, b) -> int:
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


def _images(model, **kw):
    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", **kw)
    pipe.progress = False
    return pipe("a red apple", steps=2, guidance=4.0, seed=1, **SIZE)


@pytest.fixture(scope="module")
def models(tiny_sd1, tiny_sd2, tiny_sdxl, tiny_refiner):
    return {"sd1": tiny_sd1, "sd2": tiny_sd2, "sdxl": tiny_sdxl, "sdxl_refiner": tiny_refiner}


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_folder_to_file_and_back_is_bit_exact(models, kind, tmp_path):
    src = models[kind]
    single = convert(src, tmp_path / "model.safetensors")
    back = convert(single, tmp_path / "back")
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if not (src / comp).is_dir():
            assert not (back / comp).exists()
            continue
        a, b = load_component_state(src / comp), load_component_state(back / comp)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), comp
    assert (
        json.loads((back / "model_index.json").read_text())["_class_name"]
        == json.loads((src / "model_index.json").read_text())["_class_name"]
    )


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_single_file_gives_the_folders_pixels_here_and_in_diffusers(models, kind, tmp_path):
    import diffusers

    src = models[kind]
    single = convert(src, tmp_path / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        keys = list(f.keys())
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys  # the original layout
    assert any(k.startswith(("cond_stage_model.", "conditioner.embedders.")) for k in keys)
    folder = _images(src)
    assert max_pixel_diff(folder, _images(single)) == 0
    if kind == "sdxl":
        ref = diffusers.StableDiffusionXLPipeline.from_single_file(
            str(single), config=str(src), local_files_only=True, add_watermarker=False
        )
    else:
        ref = diffusers.StableDiffusionPipeline.from_single_file(
            str(single), config=str(src), local_files_only=True, safety_checker=None, requires_safety_checker=False
        )
    ref.set_progress_bar_config(disable=True)
    theirs = ref(
        "a red apple",
        num_inference_steps=2,
        guidance_scale=4.0,
        generator=[torch.Generator("cpu").manual_seed(1)],
        **SIZE,
    ).images
    assert max_pixel_diff(folder, theirs) <= 1


def test_cli_convert_and_generate_from_a_file(tiny_sd1, tmp_path):
    single = tmp_path / "m.safetensors"
    r = run_cli("convert", tiny_sd1, single)
    assert r.returncode == 0 and r.stdout.strip() == str(single), r.stderr
    r = run_cli("convert", tiny_sd1, single)
    assert r.returncode == 2 and "never overwrites" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("generate", "a red apple", "--model", single, "--steps", "2", "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 0, r.stderr
    from latentdiff.images.write import read_params

    params = read_params(r.stdout.strip())
    assert params["model"] == str(single) and len(params["model_hash"]) == 10  # A1111's Model hash of a file


def test_fp16_file_is_half_the_size(tiny_sd1, tmp_path):
    full = convert(tiny_sd1, tmp_path / "full.safetensors")
    half = convert(tiny_sd1, tmp_path / "half.safetensors", dtype="fp16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert max_pixel_diff(_images(full), _images(half)) <= 8


def test_pickle_checkpoint_needs_the_flag_and_loads_weights_only(tiny_sd1, tmp_path):
    from latentdiff.formats.single_file import load_single_file, to_ldm
    from latentdiff.models.assemble import load_components

    tensors, _ = to_ldm(load_components(tiny_sd1), with_tokenizers=False)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": tensors}, ckpt)
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_single_file(ckpt)
    # A .ckpt carries no configs: it is read (weights_only), detected as SD 1.x, and the tiny
    # weights are refused against the real SD 1.5 config with one clear line.
    with pytest.raises(ModelError, match="do not fit"):
        load_single_file(ckpt, allow_pickle=True)


# ---- foreign files: the shipped configs, checked on full-size models without any weights ---------
@pytest.mark.parametrize(
    "family, in_channels, prediction",
    [
        ("sd1", 4, None),
        ("sd1", 9, None),
        ("sd2", 4, "v_prediction"),
        ("sd2", 4, "epsilon"),
        ("sd2", 9, None),
        ("sdxl", 4, None),
        ("sdxl", 9, None),
        ("sdxl_refiner", 4, None),
    ],
)
def test_full_size_checkpoints_are_detected_and_convert_with_shipped_configs(family, in_channels, prediction):
    """A full-size model built on the meta device from the shipped configs is written in the A1111
    layout; detection from names and shapes finds its family, and diffusers' converters map every
    tensor back onto the same architecture: what a real civitai file goes through, offline."""
    from latentdiff.families.released import family_configs
    from latentdiff.formats.detect import detect
    from latentdiff.formats.single_file import _components, to_ldm

    configs = {**family_configs(family, in_channels, prediction), "family": family}
    meta = _meta_components(configs)
    tensors, _ = to_ldm(meta, with_tokenizers=False)
    found = detect({k: list(v.shape) for k, v in tensors.items()}, "model.safetensors")
    assert (found.family, found.in_channels) == (family, in_channels)
    back = _components(tensors, configs, "model.safetensors")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(meta, name), getattr(back, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert back.tokenizer_2 is None or back.tokenizer_2.pad_token == "!"
    assert (back.tokenizer or back.tokenizer_2)("a photo of a cat").input_ids == [
        49406,
        320,
        1125,
        539,
        320,
        2368,
        49407,
    ]


def _meta_components(configs):
    import transformers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from latentdiff.models.components import Components

    with init_empty_weights():
        te = {
            s: (transformers.CLIPTextModel if s == "text_encoder" else transformers.CLIPTextModelWithProjection)(
                transformers.CLIPTextConfig.from_dict(configs[s])
            )
            if configs.get(s)
            else None
            for s in ("text_encoder", "text_encoder_2")
        }
        return Components(
            unet=UNet2DConditionModel.from_config(configs["unet"]),
            vae=AutoencoderKL.from_config(configs["vae"]),
            tokenizer=None,
            tokenizer_2=None,
            scheduler_config=configs["scheduler"],
            defaults={},
            **te,
        )


# ---- --vae -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_sd1(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "other", "sd1", seed=7)


def test_vae_swap_from_a_folder_or_a_file(tiny_sd1, other_sd1, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_sd1, swapped)
    shutil.rmtree(swapped / "vae")
    shutil.copytree(other_sd1 / "vae", swapped / "vae")
    expected = _images(swapped)
    assert max_pixel_diff(expected, _images(tiny_sd1)) > 1, "the other VAE must decode differently"
    single = convert(other_sd1, tmp_path / "other.safetensors")
    for vae in (other_sd1 / "vae", other_sd1, other_sd1 / "vae" / "diffusion_pytorch_model.safetensors", single):
        assert max_pixel_diff(_images(tiny_sd1, vae=vae), expected) == 0, vae


def test_vae_that_is_no_vae_is_one_line(tiny_sd1, tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(lora))
    r = run_cli_here("generate", "x", "--model", tiny_sd1, "--vae", lora, "--steps", "1")
    assert r.returncode == 2 and "is a LoRA" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- what is not supported, in one line -------------------------------------------------------------
def _file(tmp_path, keys):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(2, 2) for k in keys}, str(path))
    return path


@pytest.mark.parametrize(
    "keys, what",
    [
        (
            ["model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight"],
            "SD 3/3.5 transformer alone; it also needs the CLIP-L and CLIP-G text encoders",  # without --components
        ),
        (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "Flux.1 transformer alone"),
        (["control_model.input_hint_block.0.weight"], "ControlNet"),
        (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "LoRA"),
        (["emb_params"], "textual-inversion"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"], "VAE alone"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "no text encoder"),
        (["something.else"], "unknown set"),
    ],
)
def test_unsupported_files_name_what_they_are(tmp_path, keys, what):
    r = run_cli_here("generate", "x", "--model", _file(tmp_path, keys))
    # a Flux/SD3 transformer file is supported with --components, which the line asks for
    assert r.returncode == 2 and what in r.stderr and ("supported:" in r.stderr or "--components" in r.stderr), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"])
def test_broken_files_are_one_line(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    r = run_cli_here("generate", "x", "--model", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(
    "index, what",
    [
        ({"model_index.json": {"_class_name": "SanaPipeline"}}, "SanaPipeline"),
        ({"model_index.json": {"_class_name": "PixArtSigmaPipeline"}}, "PixArtSigmaPipeline"),
        ({"config.json": {"_class_name": "ControlNetModel"}}, "ControlNetModel"),
    ],
)
def test_unsupported_folders_name_what_they_are(tmp_path, index, what):
    for name, content in index.items():
        (tmp_path / name).write_text(json.dumps(content))
    r = run_cli_here("generate", "x", "--model", tmp_path)
    assert r.returncode == 2 and what in r.stderr and "supported:" in r.stderr, r.stderr


def test_inpainting_model_from_a_file_generates(tmp_path):
    from latentdiff.models.build import build_components
    from latentdiff.models.components import save_components
    from latentdiff.models.testing import WORDS, tiny_arch

    arch = tiny_arch("sd1")
    arch["unet"] = {**arch["unet"], "in_channels": 9}
    save_components(build_components(arch, WORDS), tmp_path / "inpaint", "PNDMScheduler")
    single = convert(tmp_path / "inpaint", tmp_path / "inpaint.safetensors")
    r = run_cli_here("generate", "x", "--model", single, "--steps", "1", "--out", tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith(".png"), r.stderr  # text alone: it repaints everything


def _lora_folder(path, base):
    """A LoRA folder as finetune writes one (its weights need not be read to be refused)."""
    path.mkdir()
    (path / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (path / "latentdiff.json").write_text(json.dumps({"lora": "pytorch_lora_weights.safetensors", "base_model": base}))
    return path


def test_convert_refuses_a_unet_without_single_file_layout_before_reading_weights(tmp_path, capsys, monkeypatch):
    """The shipped model's UNet adds diffusers' addition_embed_type "text": A1111 has no layout for it."""
    from latentdiff.cli.main import main
    from latentdiff.models.hub import DEFAULT_MODEL_DIR

    def refuse(*args, **kwargs):
        raise AssertionError("weights read before the layout was checked")

    monkeypatch.setattr("latentdiff.models.assemble.load_components", refuse)
    out = tmp_path / "emoji.safetensors"
    assert main(["convert", str(DEFAULT_MODEL_DIR), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists()
    assert "addition_embed_type 'text'" in err and "A1111 and ComfyUI" in err and "use the folder as it is" in err


def test_convert_refuses_a_lora_folder_in_one_line(tiny_sd1, tmp_path, capsys):
    from latentdiff.cli.main import main

    on_emoji = _lora_folder(tmp_path / "emoji-lora", None)  # no base recorded: the shipped model
    assert main(["convert", str(on_emoji), str(tmp_path / "a.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{on_emoji} is a LoRA, not a model" in err and "use it with --lora on its base" in err
    assert "no A1111/ComfyUI form either (its UNet adds diffusers' addition_embed_type 'text'" in err
    on_sd1 = _lora_folder(tmp_path / "sd1-lora", str(tiny_sd1))
    assert main(["convert", str(on_sd1), str(tmp_path / "b.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is a LoRA, not a model (convert writes whole models); use it with --lora")
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_unet_tensor_without_an_original_name_is_one_model_error():
    from latentdiff.formats.ldm_keys import unet_to_ldm

    config = {"layers_per_block": 1, "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}
    with pytest.raises(ModelError, match="its UNet holds extra.weight, which the single-file layout A1111"):
        unet_to_ldm({"extra.weight": torch.zeros(1)}, config)


@pytest.mark.parametrize(
    "keys, what",
    [
        (["transformer_blocks.0.img_mod.1.weight", "txt_norm.weight", "img_in.weight"], "a Qwen-Image transformer"),
        (["model.diffusion_model.cap_embedder.0.weight", "context_refiner.0.attention.to_q.weight"], "a Z-Image"),
        (["double_blocks.0.img_mod.lin.weight", "single_blocks.0.linear1.weight"], "Flux"),
        (["double_blocks.0.img_attn.qkv.weight", "distilled_guidance_layer.in_proj.weight"], "a Chroma transformer"),
    ],
)
def test_transformer_single_files_are_named(keys, what):
    from latentdiff.formats.detect import describe

    assert describe(keys).startswith(what)
