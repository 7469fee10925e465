"""Training input never ends in a traceback or a bad checkpoint: types, recipes on --resume,
damaged checkpoints, full disks, FIFOs, symlinks, flags derived from the config."""

import dataclasses
import errno
import json
import os

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from latentdiff import LatentDiffError, UsageError
from latentdiff.cli.main import main
from latentdiff.config.common import merge
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.clip_config import ClipTrainConfig
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.data.scan import scan_dataset
from latentdiff.training.loop import finetune
from latentdiff.training.vae_config import VaeTrainConfig


@pytest.fixture
def dataset(squares):
    return squares


def run_args(dataset, model, out, *extra):
    return [
        "finetune",
        str(dataset),
        "--model",
        str(model),
        "--out",
        str(out),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--resolution",
        "64",
        "--checkpoint-every",
        "1",
        "--seed",
        "3",
        *extra,
    ]


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("max_steps", "abc", "max_steps .* must be a whole number"),
        ("max_steps", 1.5, "whole number"),
        ("log_every", "5", "log_every .* whole number"),
        ("seed", 2**70, "below 2\\*\\*63"),
        ("validation_prompts", 5, "list of strings"),
        ("lr", float("inf"), "finite"),
        ("lr", "1e-3", "1.0e-3"),
        ("sample_defaults", [1], "mapping"),
        ("lr_schedule", "wiggly", "cosine_with_restarts"),
        ("image_encoder", 5, "--image-encoder.* must be text"),
        ("image_encoder", "enc", "--image-encoder is for --method prior and --method unclip"),
        ("method", "decoder", "prior, unclip"),
    ],
)
def test_wrong_types_are_one_line_usage_errors(field, value, words):
    with pytest.raises(UsageError, match=words):
        FinetuneConfig(dataset="d", out="o", model="m", **{field: value})


def test_yaml_type_errors_exit_2_without_traceback(dataset, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: abc\n")
    assert main(["finetune", str(dataset), "--model", "m", "--out", str(tmp_path / "o"), "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "max_steps" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_field_has_a_flag_with_help_and_unknown_names_are_refused(capsys):
    from latentdiff.config.flags import field_docs

    for cls, command in ((FinetuneConfig, "finetune"), (VaeTrainConfig, "train-vae"), (ClipTrainConfig, "train-clip")):
        docs = field_docs(cls)
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
            assert f.name == "dataset" or f"--{f.name.replace('_', '-')}" in text, f.name
    with pytest.raises(UsageError, match="log_evry"):
        merge(FinetuneConfig, {}, {"dataset": "d", "out": "o", "model": "m", "log_evry": 5})


def test_resume_uses_the_saved_recipe_and_refuses_other_changes(dataset, tiny_sd1, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(run_args(dataset, tiny_sd1, out, "--method", "lora", "--lora-rank", "2", "--log-every", "1")) == 0
    # No --model, --resolution, --lora-rank...: the saved recipe is the base; max_steps may change.
    assert main(["finetune", str(dataset), "--out", str(out), "--resume", "--max-steps", "2"]) == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["resolution"], saved["lora_rank"], saved["max_steps"], saved["batch_size"]) == (64, 2, 2, 2)
    assert ckpt.read_manifest(ckpt.latest_checkpoint(out))["step"] == 2
    capsys.readouterr()
    assert main(["finetune", str(dataset), "--out", str(out), "--resume", "--max-steps", "3", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "different lr" in err and "--change-recipe" in err
    assert yaml.safe_load((out / "config.yaml").read_text()) == saved  # refused: nothing rewritten
    assert (
        main(
            [
                "finetune",
                str(dataset),
                "--out",
                str(out),
                "--resume",
                "--max-steps",
                "3",
                "--lr",
                "0.5",
                "--change-recipe",
            ]
        )
        == 0
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.5


def test_non_finite_weights_are_never_checkpointed(dataset, tiny_sd1, tmp_path, monkeypatch):
    real_step = torch.optim.AdamW.step
    calls = []

    def poisoned_step(self, *a, **k):  # the second update makes the weights NaN; its loss was finite
        result = real_step(self, *a, **k)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    out = tmp_path / "run"
    with pytest.raises(LatentDiffError, match="non-finite by step 2"):
        finetune(
            FinetuneConfig(
                dataset=str(dataset),
                model=str(tiny_sd1),
                out=str(out),
                max_steps=3,
                batch_size=2,
                resolution=64,
                checkpoint_every=1,
            )
        )
    last = ckpt.latest_checkpoint(out)
    assert last.name == "step-00000001"
    assert all(torch.isfinite(t).all() for t in load_file(str(last / "trainable.safetensors")).values())


def test_damaged_checkpoints_and_full_disks_are_one_line(dataset, tiny_sd1, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(run_args(dataset, tiny_sd1, out, "--max-steps", "2", "--keep-checkpoints", "3")) == 0
    two = ckpt.latest_checkpoint(out)
    size = (two / "optimizer.pt").stat().st_size
    (two / "optimizer.pt").write_bytes(b"\0" * size)  # same size: passes the manifest, fails to load
    assert main(["finetune", str(dataset), "--out", str(out), "--resume", "--max-steps", "3"]) == 2
    assert "is damaged" in capsys.readouterr().err
    for manifest in ({}, {"step": "abc", "files": {}}):
        (two / "manifest.json").write_text(json.dumps(manifest))
        assert ckpt.latest_checkpoint(out).name == "step-00000001"  # the damaged one is never resumed from

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("latentdiff.training.outputs.save_file", disk_full, raising=False)
    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    assert main(["finetune", str(dataset), "--out", str(out), "--resume", "--max-steps", "3"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "earlier checkpoints are kept" in err and "Traceback" not in err
    assert ckpt.latest_checkpoint(out).name == "step-00000001"
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_fifos_symlinks_and_bad_utf8_in_a_dataset(dataset, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), "green").save(outside)
    os.symlink(outside, dataset / "link.png")
    (dataset / "link.txt").write_text("a link")
    os.mkfifo(dataset / "pipe.png")  # opening it would wait forever
    (dataset / "pipe.txt").write_text("a pipe")
    (dataset / "sub").mkdir()
    os.symlink(outside, dataset / "sub" / "row.png")
    (dataset / "sub" / "metadata.jsonl").write_text(json.dumps({"file_name": "row.png", "text": "a row"}) + "\n")
    scan = scan_dataset(dataset, 64)
    reasons = dict(scan.skipped)
    assert "outside the dataset" in reasons["link.png"] and "outside the dataset" in reasons["sub/row.png"]
    assert "not a regular file" in reasons["pipe.png"]
    assert sorted(r.path.name for r in scan.records) == ["0.png", "1.png"]
    followed = scan_dataset(dataset, 64, follow_symlinks=True)
    assert sorted(r.path.name for r in followed.records) == ["0.png", "1.png", "link.png", "row.png"]
    (dataset / "sub" / "metadata.jsonl").write_bytes(b'{"file_name": "row.png", "text": "caf\xe9"}\n')
    with pytest.raises(UsageError, match="not UTF-8"):
        scan_dataset(dataset, 64)
