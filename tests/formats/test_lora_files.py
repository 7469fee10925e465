"""--lora at generation: kohya files written by hand from known tensors, diffusers files,
stacking, scale 0, parity with diffusers' load_lora_weights + fuse_lora, metadata, a LoRA
folder's base that moves with it."""

import shutil

import numpy as np
import pytest
import torch
from helpers import ALPHA, RANK, TE_LAYER, UNET_LAYER, kohya_file, low_rank  # noqa: F401
from safetensors.torch import save_file

from latentdiff import Pipeline, UsageError
from latentdiff.errors import ModelError


def diffusers_file(path, seed=5):
    """The diffusers/peft layout (lora_A/lora_B, no alpha: scale 1), UNet only."""
    down, up = low_rank(seed)
    save_file({f"unet.{UNET_LAYER}.lora_A.weight": down, f"unet.{UNET_LAYER}.lora_B.weight": up}, path)
    return path


def weight(pipe, which):
    c = pipe.components
    return (
        c.unet.get_submodule(UNET_LAYER)
        if which == "unet"
        else getattr(c.text_encoder, "text_model", c.text_encoder).get_submodule(TE_LAYER.split(".", 1)[1])
    ).weight


def load(model, *loras):
    p = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", loras=[str(x) for x in loras])
    p.progress = False
    return p


def test_kohya_lora_merges_scale_times_alpha_over_rank(tiny_sd1, pipe_sd1, tmp_path):
    f = kohya_file(tmp_path / "style.safetensors")
    pipe = load(tiny_sd1, f"{f}:0.7")
    for which, seed in (("unet", 0), ("te", 1)):
        down, up = low_rank(seed)
        expected = weight(pipe_sd1, which) + 0.7 * (ALPHA / RANK) * up @ down
        assert torch.allclose(weight(pipe, which), expected, atol=1e-5)
    assert not any("lora" in n for n, _ in pipe.components.unet.named_modules()), "fused and unloaded"


def test_locon_conv_layers_merge(tiny_sd1, pipe_sd1, tmp_path):
    """LyCORIS LoCon: kohya names on convolutions, a 3x3 down and a 1x1 up projection."""
    from safetensors.torch import load_file

    conv = "down_blocks.0.resnets.0.conv1"
    g = torch.Generator().manual_seed(3)
    down, up = torch.randn(RANK, 32, 3, 3, generator=g) * 0.3, torch.randn(32, RANK, 1, 1, generator=g) * 0.3
    key = "lora_unet_" + conv.replace(".", "_")
    tensors = {
        **load_file(kohya_file(tmp_path / "k.safetensors")),
        f"{key}.lora_down.weight": down,
        f"{key}.lora_up.weight": up,
        f"{key}.alpha": torch.tensor(ALPHA),
    }
    save_file(tensors, tmp_path / "locon.safetensors")
    pipe = load(tiny_sd1, f"{tmp_path / 'locon.safetensors'}:0.5")
    base = pipe_sd1.components.unet.get_submodule(conv).weight
    expected = base + 0.5 * (ALPHA / RANK) * (up.flatten(1) @ down.flatten(1)).reshape(base.shape)
    assert torch.allclose(pipe.components.unet.get_submodule(conv).weight, expected, atol=1e-5)


def test_stacked_loras_add_up(tiny_sd1, pipe_sd1, tmp_path):
    k, d = kohya_file(tmp_path / "a.safetensors"), diffusers_file(tmp_path / "b.safetensors")
    pipe = load(tiny_sd1, f"{k}:0.5", f"{d}:-1.5")
    (kd, ku), (dd, du) = low_rank(0), low_rank(5)
    expected = weight(pipe_sd1, "unet") + 0.5 * (ALPHA / RANK) * ku @ kd - 1.5 * du @ dd
    assert torch.allclose(weight(pipe, "unet"), expected, atol=1e-5)


def test_scale_zero_gives_the_base_pixels_exactly(tiny_sd1, pipe_sd1, tmp_path):
    f = kohya_file(tmp_path / "style.safetensors")
    base = pipe_sd1("a red apple", steps=2, seed=3)[0]
    zero = load(tiny_sd1, f"{f}:0")("a red apple", steps=2, seed=3)[0]
    full = load(tiny_sd1, f)("a red apple", steps=2, seed=3)[0]
    assert np.array_equal(np.asarray(base), np.asarray(zero))
    assert not np.array_equal(np.asarray(base), np.asarray(full))


@pytest.mark.parametrize("scale", [0.6, 1.0])
def test_pixels_match_diffusers_fuse_lora(tiny_sd1, tmp_path, scale):
    from diffusers import StableDiffusionPipeline

    from latentdiff.sampling.loop import make_scheduler

    f = kohya_file(tmp_path / "style.safetensors")
    ours = load(tiny_sd1, f"{f}:{scale}")
    mine = ours("a red apple", steps=3, guidance=5.0, seed=4, scheduler="euler")[0]
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    ref.load_lora_weights(str(f))
    ref.fuse_lora(lora_scale=scale)
    theirs = ref(
        "a red apple", num_inference_steps=3, guidance_scale=5.0, generator=[torch.Generator("cpu").manual_seed(4)]
    ).images[0]
    diff = np.abs(np.asarray(mine, dtype=int) - np.asarray(theirs, dtype=int)).max()
    assert np.asarray(mine).std() > 5 and diff <= 2


def test_loras_are_recorded_and_replayed(tiny_sd1, tmp_path, capsys):
    from helpers import made_and_replayed

    from latentdiff.models.fingerprint import short_hash

    f = kohya_file(tmp_path / "my style.safetensors")
    params, fields = made_and_replayed(capsys, tmp_path, "a cat", "--model", tiny_sd1, "--lora", f"{f}:0.8")
    (entry,) = params["loras"]
    assert (entry["name"], entry["scale"], entry["hash"]) == ("my style", 0.8, short_hash(f))
    assert fields["Lora hashes"] == f"my style: {short_hash(f)}"


def test_bad_loras_are_one_clear_error(tiny_sd1, tmp_path, capsys):
    from helpers import fails

    other = tmp_path / "other.safetensors"
    save_file(
        {
            "lora_unet_nowhere_to_q.lora_down.weight": torch.zeros(4, 8),
            "lora_unet_nowhere_to_q.lora_up.weight": torch.zeros(8, 4),
        },
        other,
    )
    wrong_shape = tmp_path / "shape.safetensors"
    down, up = low_rank(0, out_dim=64, in_dim=64)
    save_file({f"unet.{UNET_LAYER}.lora_A.weight": down, f"unet.{UNET_LAYER}.lora_B.weight": up}, wrong_shape)
    assert "does not exist" in fails(capsys, "x", "--model", tiny_sd1, "--lora", tmp_path / "missing.safetensors:0.5")
    not_lora = tmp_path / "weights.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, not_lora)
    assert "Target modules {'nowhere.to_q'} not found" in fails(capsys, "x", "--model", tiny_sd1, "--lora", other)
    assert "Invalid LoRA checkpoint" in fails(capsys, "x", "--model", tiny_sd1, "--lora", not_lora)
    assert "does not fit this model" in fails(capsys, "x", "--model", tiny_sd1, "--lora", wrong_shape)
    with pytest.raises(UsageError, match="without pytorch_lora_weights"):
        Pipeline.from_pretrained(tiny_sd1, loras=[str(tmp_path)])


def test_a_lora_folder_finds_its_base_after_both_move(tiny_sd1, tmp_path):
    from latentdiff.formats.lora_merge import LORA_FILE, base_record

    home = tmp_path / "home"
    base = shutil.copytree(tiny_sd1, home / "models" / "base")
    lora = home / "runs" / "style"
    lora.mkdir(parents=True)
    diffusers_file(lora / LORA_FILE)
    (lora / "latentdiff.json").write_text(__import__("json").dumps({"lora": LORA_FILE, **base_record(str(base), lora)}))
    expected = load(str(lora))("a cat", steps=2, seed=1)[0]
    moved = shutil.move(str(home), tmp_path / "elsewhere")
    again = load(str(moved / "runs" / "style"))("a cat", steps=2, seed=1)[0]
    assert np.array_equal(np.asarray(expected), np.asarray(again))
    alone = shutil.move(str(moved / "runs" / "style"), tmp_path / "style")
    with pytest.raises(ModelError, match=r"is not at .*; pass it yourself: --model BASE --lora"):
        load(str(alone))


def test_lora_scale_is_in_the_a1111_line_and_read_back(tiny_sd1, tmp_path):
    """As A1111 writes it: the LoRA as a `<lora:NAME:SCALE>` tag in the prompt and in "Lora hashes";
    a LoRA run folder loaded as the model is the base model plus its LoRA."""
    from latentdiff.formats.lora_merge import base_record
    from latentdiff.images.infotext import params_from_a1111, parse_infotext
    from latentdiff.models.fingerprint import short_hash

    f = kohya_file(tmp_path / "my style.safetensors")
    line = load(tiny_sd1, f"{f}:0.8")("a cat", steps=1)[0].info["parameters"]
    prompt, _, fields = parse_infotext(line)
    assert prompt == "a cat <lora:my style:0.8>" and fields["Lora hashes"] == f"my style: {short_hash(f)}"
    params = params_from_a1111(line)[0]
    assert params["prompt"] == "a cat <lora:my style:0.8>"  # read from --lora-dir

    run = tmp_path / "runs" / "catstyle"
    run.mkdir(parents=True)
    shutil.copy(f, run / "catstyle.safetensors")
    (run / "latentdiff.json").write_text(
        __import__("json").dumps({"lora": "catstyle.safetensors", **base_record(str(tiny_sd1), run)})
    )
    image = load(str(run))("a cat", steps=1)[0]
    prompt, _, fields = parse_infotext(image.info["parameters"])
    assert prompt == "a cat <lora:catstyle:1>" and fields["Model"] == tiny_sd1.name
    assert fields["Lora hashes"].startswith("catstyle: ") and image.info["latentdiff"]["model"] == str(run)


def test_spec_takes_a_text_encoder_scale_of_its_own(tmp_path):
    from latentdiff.formats.lora import parse_spec

    f = kohya_file(tmp_path / "a:b.safetensors")  # a ':' in the path itself
    assert (parse_spec(str(f)).scale, parse_spec(str(f)).te_scale) == (1.0, None)
    assert (parse_spec(f"{f}:0.6").scale, parse_spec(f"{f}:0.6").te_scale) == (0.6, None)
    spec = parse_spec(f"{f}:0.7:0.3")
    assert (spec.path, spec.scale, spec.te_scale) == (f, 0.7, 0.3)
    with pytest.raises(UsageError, match="text encoder's LoRA scale"):
        parse_spec(f"{f}:0.7:1e9")
