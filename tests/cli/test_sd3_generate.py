"""`latentdiff generate` on a tiny SD 3.5 folder: the PNG records what makes it again (`--from`
gives the same pixels), its A1111 line is SD's (plain CFG scale, as Forge writes SD3's), and a
flag SD3 cannot take is one line, exit 2."""

from __future__ import annotations

import pytest
from helpers import fails, made_and_replayed


@pytest.fixture(scope="module")
def tiny_sd35(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("sd3") / "large", "sd3.5-large")


def test_generate_records_sd3_and_from_replays_it(tiny_sd35, tmp_path, capsys):
    args = ["a red apple", "--model", tiny_sd35, "--width", 48, "--height", 32, "--seed", 4]
    params, fields = made_and_replayed(capsys, tmp_path, *args, "--negative", "blue sky", "--guidance", 4.5)
    assert (params["guidance"], params["negative_prompt"], params["steps"]) == (4.5, "blue sky", 2)
    assert params["scheduler_class"] == "FlowMatchEulerDiscreteScheduler"
    assert "guidance_embedded" not in params and "true_cfg" not in params
    assert fields["CFG scale"] == "4.5" and "Distilled CFG Scale" not in fields
    assert fields["Size"] == "48x32"


def test_generate_refuses_true_cfg_and_an_unpatchable_size_for_sd3(tiny_sd35, tmp_path, capsys):
    base = ["a cat", "--model", tiny_sd35, "--steps", 1, "--out", tmp_path]
    assert "true_cfg 2 is for guidance-distilled models" in fails(capsys, *base, "--true-cfg", 2)
    assert "not a multiple of 4" in fails(capsys, *base, "--width", 42, "--height", 32)
    assert not any(tmp_path.iterdir())


def test_a_kohya_style_sd3_lora_is_one_line(tiny_sd35, tmp_path, capsys):
    """diffusers 0.42 converts no SD3 LoRA layout but its own: a kohya-style file names no layer here."""
    import torch
    from safetensors.torch import save_file

    key = "lora_unet_joint_blocks_0_x_block_attn_qkv"
    tensors = {f"{key}.lora_down.weight": torch.randn(2, 32), f"{key}.lora_up.weight": torch.randn(96, 2)}
    save_file({**tensors, f"{key}.alpha": torch.tensor(2.0)}, str(tmp_path / "k.safetensors"))
    base = [
        "a cat",
        "--model",
        tiny_sd35,
        "--steps",
        1,
        "--out",
        tmp_path / "out",
        "--lora",
        tmp_path / "k.safetensors",
    ]
    assert "none of its 3 tensors name a layer of this model" in fails(capsys, *base)
    assert not (tmp_path / "out").exists()
