"""Every size-like flag of finetune and train-vae has a bound: a fixed ceiling checked with the flags,
and the memory the run would need checked before anything of that size is allocated. Each refusal is
one line naming the flag, the limit and why (issue 24)."""

import pytest
import yaml
from helpers import memory_cap

from latentdiff.cli.main import main
from latentdiff.errors import UsageError
from latentdiff.training import bounds
from latentdiff.training.config import FinetuneConfig


def refused(capsys, *argv) -> str:
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    assert code == 2, err
    # progress notes (dataset found, ...) may come first; the refusal is the one last line
    errors = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0]), err
    return errors[0]


def finetune(dataset, model, out, *extra):
    return ["finetune", dataset, "--model", model, "--out", out, "--max-steps", 1, "--resolution", 64, *extra]


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--resolution", 1_000_000, "--resolution 1000000 is above 8,192"),
        ("--batch-size", 10**9, "--batch-size .* above 4,096"),
        ("--grad-accum", 10**9, "--grad-accum .* above 4,096"),
        ("--lora-rank", 10**9, "--lora-rank .* above 4,096"),
        ("--repeats", 10**9, "--repeats .* above"),
        ("--validation-steps", 10**9, "--validation-steps .* above"),
        ("--max-steps", 10**13, "--max-steps .* above"),
    ],
)
def test_fixed_ceilings_are_refused_at_once(tmp_path, capsys, flag, value, words):
    err = refused(capsys, *finetune(tmp_path / "none", "m", tmp_path / "o", flag, value))
    assert err.startswith("latentdiff: error: ") and pytest.importorskip("re").search(words, err), err
    assert not (tmp_path / "o").exists()


def test_too_many_validation_prompts_are_refused():
    with pytest.raises(UsageError, match="validation prompts.*at most 256"):
        FinetuneConfig(dataset="d", out="o", model="m", validation_prompts=["a"] * 257)


def test_resolution_past_memory_is_one_line_before_allocating(dataset, tiny_sd1, tmp_path, capsys, monkeypatch):
    """The issue's case: 4 small images at a resolution the machine cannot hold (17.5 GB, then killed)."""
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 2**30)
    with memory_cap(2 * 2**30):
        err = refused(capsys, *finetune(dataset, tiny_sd1, tmp_path / "o", "--resolution", 8192, "--batch-size", 4))
    assert "--resolution 8192" in err and "--batch-size 4" in err and "1.0 GiB is available" in err, err
    assert not list((tmp_path / "o").glob("checkpoints/step-*"))


def test_batch_size_counts_only_the_images_a_step_can_hold(dataset, tiny_sd1, tmp_path):
    """A batch larger than the epoch trains on the epoch: the memory check counts what a step holds."""
    need = bounds.effective_batch(10**3, [1, 1, 1, 1])
    assert need == 4


def test_lora_rank_above_the_smallest_adapted_layer_is_refused(dataset, tiny_sd1, tmp_path, capsys):
    err = refused(capsys, *finetune(dataset, tiny_sd1, tmp_path / "o", "--lora-rank", 33))
    assert "--lora-rank 33" in err and "at most 32" in err and "smallest" in err, err


def test_lora_rank_past_memory_is_refused(dataset, tiny_sd1, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 10_000)
    err = refused(capsys, *finetune(dataset, tiny_sd1, tmp_path / "o", "--lora-rank", 32))
    assert "--lora-rank 32" in err and "available" in err, err


def test_kohya_repeats_past_the_epoch_ceiling_are_refused(tmp_path, tiny_sd1, capsys):
    from PIL import Image

    folder = tmp_path / "ds" / "999999999999_cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(folder / "a.png")
    err = refused(capsys, *finetune(tmp_path / "ds", tiny_sd1, tmp_path / "o"))
    assert "an epoch" in err and "at most 10,000,000" in err, err


def test_the_estimate_grows_with_resolution_and_batch():
    unet, vae = {"block_out_channels": [320, 640, 1280, 1280]}, {"block_out_channels": [128, 256, 512, 512]}
    small = bounds.step_bytes(unet, vae, 16, 512, 4, checkpointing=False, encode_batch=1)
    assert bounds.step_bytes(unet, vae, 32, 512, 4, checkpointing=False, encode_batch=1) > small
    assert bounds.step_bytes(unet, vae, 16, 1024, 4, checkpointing=False, encode_batch=1) > 3 * small
    assert bounds.step_bytes(unet, vae, 16, 512, 4, checkpointing=True, encode_batch=1) < small
    # deliberately low: SD 1.5 at 512, batch 4, fp32, uncached fits in a few GiB by this measure
    assert bounds.step_bytes(unet, vae, 4, 512, 4, checkpointing=False) < 4 * 2**30


# --- train-vae --------------------------------------------------------------------------------


def vae_recipe(tmp_path, **extra):
    path = tmp_path / "vae.yaml"
    arch = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2}
    arch |= {"up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 4}
    path.write_text(yaml.safe_dump({"vae": arch, **extra}))
    return path


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("--resolution", 10**6, "resolution 1000000 is above 8,192"),
        ("--batch-size", 10**9, "batch_size .* above 4,096"),
        ("--eval-train-images", 10**9, "eval_train_images .* above"),
    ],
)
def test_train_vae_ceilings(tmp_path, capsys, flag, value, words):
    import re

    argv = ["train-vae", tmp_path / "none", "--out", tmp_path / "o", "--config", vae_recipe(tmp_path), flag, value]
    err = refused(capsys, *argv)
    assert re.search(words, err), err


def test_train_vae_resolution_past_memory_is_one_line(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 2**30)
    argv = ["train-vae", dataset, "--out", tmp_path / "o", "--config", vae_recipe(tmp_path), "--max-steps", 1]
    with memory_cap(2 * 2**30):
        err = refused(capsys, *argv, "--resolution", 8192, "--batch-size", 2)
    assert "resolution 8192" in err and "available" in err, err


@pytest.mark.parametrize(
    "arch, words",
    [
        ({"block_out_channels": 7}, "block_out_channels must be a list of 1 to 8"),
        ({"block_out_channels": ["x", 16]}, "block_out_channels entry 'x' is not a whole number"),
        ({"block_out_channels": [[8], 16]}, "block_out_channels entry \\[8\\] is not a whole number"),
        ({"block_out_channels": [8, 10**6]}, "block_out_channels entry 1000000 is above 4,096"),
        ({"block_out_channels": [8] * 9}, "block_out_channels must be a list of 1 to 8"),
        ({"layers_per_block": 10**5}, "layers_per_block 100000 is above 16"),
        ({"layers_per_block": True}, "layers_per_block True is not a whole number"),
        ({"latent_channels": 0}, "latent_channels 0 must be at least 1"),
        ({"in_channels": 4}, "in_channels must be 3"),
    ],
)
def test_train_vae_architecture_sizes_are_one_line(dataset, tmp_path, capsys, arch, words):
    import re

    recipe = yaml.safe_load(vae_recipe(tmp_path).read_text())
    recipe["vae"] |= arch
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with memory_cap(2 * 2**30):
        err = refused(capsys, "train-vae", dataset, "--out", tmp_path / "o", "--config", tmp_path / "bad.yaml")
    assert re.search(words, err), err


def test_train_vae_weights_past_memory_are_refused_before_building(dataset, tmp_path, capsys, monkeypatch):
    """4,096 channels at every level: small activations at --resolution 16, but 4.4e9 weights (70 GB
    with their gradients and AdamW's moments); counted on the meta device, refused before any is made."""
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 2**30)
    recipe = yaml.safe_load(vae_recipe(tmp_path).read_text())
    recipe["vae"] |= {"block_out_channels": [4096, 4096], "norm_num_groups": 32}
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["train-vae", dataset, "--out", tmp_path / "o", "--config", tmp_path / "wide.yaml", "--max-steps", 1]
    with memory_cap(2 * 2**30):
        err = refused(capsys, *argv, "--resolution", 16, "--batch-size", 1)
    assert "weights" in err and "available" in err, err
