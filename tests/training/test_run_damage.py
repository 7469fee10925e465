"""A run folder damaged on disk (config.yaml, run.json, checkpoint manifests) and a disk that fills
during a checkpoint: one line and the right exit code, never a traceback; the previous checkpoint
stays whole and the run resumes (issue 24)."""

import json
import os
import shutil

import pytest
from helpers import memory_cap, small_disk

from latentdiff.cli.main import main
from latentdiff.errors import UsageError
from latentdiff.training import checkpoint as ckpt

DEEP = "[" * 100_000 + "]" * 100_000


def run(dataset, model, out, *extra):
    argv = ["finetune", dataset, "--model", model, "--out", out, "--resolution", 64, "--batch-size", 2]
    return main([*map(str, [*argv, "--max-steps", 2, "--checkpoint-every", 1, "--seed", 3, *extra])])


@pytest.fixture(scope="module")
def finished(dataset, tiny_sd1, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    assert run(dataset, tiny_sd1, out) == 0
    return out


@pytest.fixture
def copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def one_line(capsys, code, expected_code=2) -> str:
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("latentdiff: error: ")]
    assert code == expected_code and "Traceback" not in err and len(errors) == 1, err
    assert err.strip().endswith(errors[0]), err
    return errors[0]


@pytest.mark.parametrize(
    "content, words",
    [
        (b"lr: [1, 2\n", "not valid YAML"),
        (DEEP.encode(), "nests 100000 levels deep"),
        (b"\xff\xfe not text", "not UTF-8"),
        (b"- a list\n", "mapping"),
        (b"wiggle: 3\n", "unknown option"),
        (b"lr: 1\x00\n", "NUL"),
    ],
    ids=["yaml", "deep", "bytes", "list", "unknown", "nul"],
)
def test_export_with_a_damaged_config_yaml_is_one_line(copy, tmp_path, capsys, content, words):
    (copy / "config.yaml").write_bytes(content)
    err = one_line(capsys, main(["export", str(copy), "--out", str(tmp_path / "lora")]))
    assert "config.yaml" in err and words in err, err
    assert not (tmp_path / "lora").exists()


def test_export_with_a_fifo_config_yaml_is_refused_at_once(copy, tmp_path, capsys):
    import os

    (copy / "config.yaml").unlink()
    os.mkfifo(copy / "config.yaml")
    err = one_line(capsys, main(["export", str(copy), "--out", str(tmp_path / "lora")]))
    assert "FIFO" in err


@pytest.mark.parametrize(
    "manifest",
    [b'{"step": 2, "fil', DEEP.encode(), b'{"step": ' + b"9" * 5000 + b', "files": {}}', b"\xff", b""],
    ids=["truncated", "deep", "long-int", "bytes", "empty"],
)
def test_resume_skips_a_damaged_manifest_and_uses_the_one_before(copy, dataset, tiny_sd1, capsys, manifest):
    last = ckpt.latest_checkpoint(copy)
    (last / ckpt.MANIFEST).write_bytes(manifest)
    assert ckpt.latest_checkpoint(copy).name == "step-00000001"
    assert run(dataset, tiny_sd1, copy, "--resume") == 0, capsys.readouterr().err
    assert "resuming from step-00000001" in capsys.readouterr().err


def test_a_manifest_naming_files_outside_its_checkpoint_is_damaged(copy):
    last = ckpt.latest_checkpoint(copy)
    manifest = json.loads((last / ckpt.MANIFEST).read_text())
    manifest["files"]["/etc/hostname"] = 1
    (last / ckpt.MANIFEST).write_text(json.dumps(manifest))
    assert ckpt.latest_checkpoint(copy) != last


def test_resume_with_every_manifest_damaged_is_one_line(copy, dataset, tiny_sd1, capsys):
    for folder in ckpt.checkpoint_dir(copy).iterdir():
        (folder / ckpt.MANIFEST).write_text(DEEP)
    err = one_line(capsys, run(dataset, tiny_sd1, copy, "--resume"))
    assert "--resume" in err and "checkpoint" in err


@pytest.mark.parametrize(
    "content",
    [DEEP, '{"command": "finetune", "entries": ' + "[" * 50 + "]" * 50 + "}", "\udcff"],
    ids=["deep", "deep-entries", "bytes"],
)
def test_a_damaged_run_json_or_recipe_is_one_line(copy, dataset, tiny_sd1, capsys, content):
    (copy / "run.json").write_text(content, errors="surrogateescape")
    code = run(dataset, tiny_sd1, copy, "--resume")
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code in (0, 2), err
    (copy / "config.yaml").write_text(DEEP)
    err = one_line(capsys, run(dataset, tiny_sd1, copy, "--resume", "--max-steps", 3))
    assert "config.yaml" in err and "nests" in err


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resumes(dataset, tiny_sd1, tmp_path, capsys):
    """Train with the run on a tmpfs too small for the second checkpoint: one line, exit 1, no
    half-written checkpoint, the first intact; with room again, --resume finishes the run."""
    disk = tmp_path / "disk"
    with small_disk(disk, "480k"):
        out = disk / "run"
        # a LoRA checkpoint of the tiny model is ~300 KB: the first fits, the second does not
        code = run(dataset, tiny_sd1, out, "--max-steps", 4, "--keep-checkpoints", 5, "--lora-format", "kohya")
        err = one_line(capsys, code, expected_code=1)
        assert "could not write the checkpoint" in err and "earlier checkpoints are kept" in err, err
        done = ckpt.complete_checkpoints(out)
        assert done and all(ckpt.is_complete(c) for c in done)
        assert not list(ckpt.checkpoint_dir(out).glob(ckpt.TMP_PREFIX + "*"))
        shutil.copytree(out, tmp_path / "moved")
    capsys.readouterr()
    moved = tmp_path / "moved"
    assert run(dataset, tiny_sd1, moved, "--resume", "--max-steps", 4, "--keep-checkpoints", 5) == 0
    assert ckpt.read_manifest(ckpt.latest_checkpoint(moved))["step"] == 4


# --- metrics.jsonl on resume (trackers.RunLog) ------------------------------------------------------


def test_resume_with_a_fifo_for_metrics_is_one_line_at_once(tmp_path):
    from latentdiff.training.trackers import RunLog

    os.mkfifo(tmp_path / "metrics.jsonl")  # opening it to append would wait for a reader forever
    for resumed_at in (0, 2):
        with pytest.raises(UsageError, match="metrics.jsonl is a FIFO") as e:
            RunLog(tmp_path, "none", {}, resumed_at=resumed_at)
        assert "\n" not in str(e.value)


def test_resume_trims_damaged_metrics_in_bounded_memory(tmp_path):
    from latentdiff.training.trackers import MAX_ROW_BYTES, RunLog

    rows = [json.dumps({"step": s, "loss": 0.5}) for s in (1, 2, 3)]
    deep = "[" * 100_000 + "]" * 100_000  # json.loads would raise RecursionError
    huge = '{"step": 1, "x": "' + "a" * (64 * MAX_ROW_BYTES) + '"}'  # one 64 MiB line, never held whole
    (tmp_path / "metrics.jsonl").write_text("\n".join([rows[0], deep, huge, rows[1], "\xff", rows[2]]) + "\n")
    with memory_cap(48 * MAX_ROW_BYTES):
        with RunLog(tmp_path, "none", {}, resumed_at=2) as log:
            log.log(3, {"loss": 0.25})
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


# --- checkpoint files damaged on disk (finetune --resume, export) -----------------------------------


@pytest.mark.parametrize("how", ["truncated", "fifo"])
def test_resume_says_which_checkpoint_is_incomplete_and_uses_the_one_before(copy, dataset, tiny_sd1, capsys, how):
    last = ckpt.latest_checkpoint(copy) / "optimizer.pt"
    if how == "fifo":
        last.unlink()
        os.mkfifo(last)  # loading it would wait for a writer forever
    else:
        last.write_bytes(last.read_bytes()[:100])
    with memory_cap(2**30):
        assert run(dataset, tiny_sd1, copy, "--resume") == 0
    err = capsys.readouterr().err
    assert "step-00000002 is incomplete (optimizer.pt " in err and "resuming from step-00000001" in err, err


def test_export_from_a_damaged_checkpoint_is_one_line(copy, tmp_path, capsys):
    last = ckpt.latest_checkpoint(copy) / "trainable.safetensors"
    last.write_bytes(b"\xff" * last.stat().st_size)  # the size the manifest says: only loading finds out
    err = one_line(capsys, main(["export", str(copy), "--out", str(tmp_path / "lora")]))
    assert "step-00000002 is damaged" in err and "delete that folder" in err, err
    assert not (tmp_path / "lora").exists()
