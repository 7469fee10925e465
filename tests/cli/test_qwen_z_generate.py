"""`latentdiff generate` on tiny Qwen-Image and Z-Image folders: the PNG records what makes it again
(`--from` gives the same pixels), its A1111 line has a plain CFG scale (neither model embeds a
distilled guidance), and a LoRA of another family or a true CFG scale is one line, exit 2."""

from __future__ import annotations

import pytest
from helpers import fails, made_and_replayed

FAMILIES = ("qwen-image", "z-image")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("qwenz")
    return {name: make_tiny(root / name, name) for name in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_records_and_from_replays_it(tiny, family, tmp_path, capsys):
    args = ["a red apple", "--model", tiny[family], "--width", 48, "--height", 32, "--seed", 4]
    params, fields = made_and_replayed(capsys, tmp_path, *args, "--negative", "blue sky", "--guidance", 3.5)
    assert (params["guidance"], params["negative_prompt"], params["steps"]) == (3.5, "blue sky", 2)
    assert params["scheduler_class"] == "FlowMatchEulerDiscreteScheduler"
    assert "guidance_embedded" not in params and "true_cfg" not in params
    assert fields["CFG scale"] == "3.5" and "Distilled CFG Scale" not in fields
    assert fields["Size"] == "48x32"


def test_z_image_cfg_options_are_recorded_and_replayed_and_refused_elsewhere(tiny, tmp_path, capsys):
    args = ["a red apple", "--model", tiny["z-image"], "--width", 48, "--height", 32, "--negative", "blue sky"]
    options = ["--guidance", 3, "--cfg-normalization", 1.5, "--cfg-truncation", 0.5]
    params, _ = made_and_replayed(capsys, tmp_path, *args, *options)
    assert (params["cfg_normalization"], params["cfg_truncation"]) == (1.5, 0.5)
    base = ["a cat", "--model", tiny["qwen-image"], "--steps", 2, "--out", tmp_path / "out"]
    assert "are Z-Image's guidance options" in fails(capsys, *base, "--cfg-truncation", 0.5)
    assert "--cfg-truncation must be <= 1" in fails(capsys, *args, "--cfg-truncation", 1.5, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_of_another_family_and_true_cfg_are_one_line(tiny, family, tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    key = "lora_unet_down_blocks_0_attentions_0_proj_in"  # an SD 1.x LoRA's layer
    tensors = {f"{key}.lora_down.weight": torch.randn(2, 32), f"{key}.lora_up.weight": torch.randn(32, 2)}
    save_file({**tensors, f"{key}.alpha": torch.tensor(2.0)}, str(tmp_path / "sd.safetensors"))
    base = ["a cat", "--model", tiny[family], "--steps", 2, "--out", tmp_path / "out"]
    line = fails(capsys, *base, "--lora", tmp_path / "sd.safetensors")
    assert "sd.safetensors does not fit this model" in line
    assert "true_cfg 2 is for guidance-distilled models" in fails(capsys, *base, "--true-cfg", 2)
    assert "not a multiple of" in fails(capsys, *base, "--width", 34, "--height", 32)
    if family == "qwen-image":  # its schedule ends at shift_terminal: one step is 0/0 (NaN in diffusers)
        assert "1 step(s) give this model's schedule" in fails(capsys, *base, "--steps", 1)
    assert not (tmp_path / "out").exists()
