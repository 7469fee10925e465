"""Checkpoint files damaged on disk (truncated, garbage of the same size, a FIFO, a tampered
manifest) and `python -m latentdiff.cli.train_vae`'s command line: one line and the right exit code,
never a traceback, a hang or an unbounded read (issue 24)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import capped, memory_cap
from PIL import Image

from latentdiff.cli.main import main
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.vae import VaeTrainConfig, train_vae

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=[8, 16],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=32,
    mid_block_add_attention=False,
)


def one_line(err: str, code: int, expected_code: int = 2) -> str:
    lines = [line for line in err.splitlines() if line.startswith("latentdiff")]
    assert code == expected_code and "Traceback" not in err and "usage:" not in err, err
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err
    return errors[0]


# --- python -m latentdiff.cli.train_vae: the same command line as `latentdiff train-vae` -----------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--bad"], "required: dataset"),
        ([], "required: dataset"),
        (["data", "--wiggle", "3"], "unrecognized arguments: --wiggle"),
        (["data", "--num-threads", "abc"], "--num-threads"),
        (["data", "--out", "run"], "no VAE architecture"),
    ],
    ids=["bad-flag", "nothing", "unknown", "not-a-number", "no-config"],
)
def test_the_module_command_line_errors_are_one_line(tmp_path, argv, words):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "latentdiff.cli.train_vae", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=capped(),
    )
    err = one_line(done.stderr, done.returncode)
    assert words in err and err.startswith("latentdiff"), err
    assert "RuntimeWarning" not in done.stderr and not done.stdout


# --- train-vae --resume from a damaged checkpoint ---------------------------------------------------


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished train-vae run with checkpoints at steps 1 and 2."""
    root = tmp_path_factory.mktemp("vae")
    (root / "data").mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 90, 200 - 40 * i)).save(root / "data" / f"{i}.png")
    cfg = dict(vae=TINY_VAE, resolution=32, batch_size=2, num_threads=1, max_steps=2, checkpoint_every=1)
    train_vae(VaeTrainConfig(dataset=str(root / "data"), out=str(root / "run"), keep_checkpoints=3, **cfg))
    return root


def _damage(folder, name, how):
    path, manifest = folder / name, json.loads((folder / ckpt.MANIFEST).read_text())
    data = path.read_bytes()
    if how.startswith("truncated"):
        path.write_bytes(data[: len(data) // 2])
        if how == "truncated-listed":  # the manifest agrees with the cut file: only loading finds out
            manifest["files"][name] = len(data) // 2
    elif how == "garbage":
        path.write_bytes(bytes((31 * i + 7) % 256 for i in range(len(data))))
    elif how == "fifo":  # a loader opening it would wait for a writer forever
        path.unlink()
        os.mkfifo(path)
        manifest["files"][name] = 0
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng.pt"])
@pytest.mark.parametrize("how", ["truncated", "truncated-listed", "garbage", "fifo"])
def test_train_vae_resume_from_damaged_checkpoint_files(vae_run, tmp_path, capsys, name, how):
    run = tmp_path / "run"
    shutil.copytree(vae_run / "run", run)
    _damage(ckpt.latest_checkpoint(run), name, how)
    argv = ["train-vae", str(vae_run / "data"), "--out", str(run), "--resume", "--max-steps", "3"]
    with memory_cap(2**30):
        code = main(argv)
    err = capsys.readouterr().err
    if how in ("truncated", "fifo"):  # no longer complete: said, and the run goes on from step 1
        assert code == 0 and "Traceback" not in err, err
        assert f"step-00000002 is incomplete ({name}" in err and "resuming at step 1" in err, err
        assert ckpt.read_manifest(ckpt.latest_checkpoint(run))["step"] == 3
    else:
        line = one_line(err, code)
        assert "step-00000002 is damaged" in line and "delete that folder" in line, line
        assert "weights_only" not in line and len(line) < 400, line  # never advise loading unsafely


@pytest.mark.parametrize(
    "extra",
    [
        {"train_seconds": "soon"},
        {"train_seconds": -1},
        {"train_seconds": [1]},
        {"ema_updates": 1.5},
        {"ema_updates": -2},
    ],
)
def test_a_manifest_with_bad_counters_is_incomplete(vae_run, tmp_path, extra):
    run = tmp_path / "run"
    shutil.copytree(vae_run / "run", run)
    last = ckpt.latest_checkpoint(run)
    manifest = json.loads((last / ckpt.MANIFEST).read_text())
    (last / ckpt.MANIFEST).write_text(json.dumps({**manifest, **extra}))
    assert ckpt.latest_checkpoint(run).name == "step-00000001"
