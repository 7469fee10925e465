"""`accelerate launch -m latentdiff.cli generate` splits the images across processes and writes what
one process writes: the same file names, seeds and pixels."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from latentdiff.runtime.sharding import Share, my_shares


def test_shares_cover_every_image_once_in_order():
    prompts = ["a", "b", "c"]
    for size in (1, 2, 3, 4, 7):
        shares = [my_shares(prompts, 3, r, size) for r in range(size)]
        flat = [(s.prompt, s.first + j) for per_rank in shares for s in per_rank for j in range(s.count)]
        assert flat == [(p, k) for p in prompts for k in range(3)], size
    assert my_shares(prompts, 3, 0, 2) == [Share("a", 0, 3), Share("b", 0, 1)]
    assert my_shares(prompts, 3, 1, 2) == [Share("b", 1, 2), Share("c", 0, 3)]


def test_repeated_prompts_are_separate_runs():
    same = ["x", "x"]
    assert my_shares(same, 2, 0, 1) == [Share(same[0], 0, 2), Share(same[1], 0, 2)]


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(tiny_sd1, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple\na blue square\na green circle\n")
    common = [
        "generate",
        "--model",
        tiny_sd1,
        "--prompts",
        prompts,
        "--num-images",
        "2",
        "--steps",
        "2",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--quiet",
    ]
    one = run_cli(*common, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "latentdiff.cli",
        *map(str, common),
        "--out",
        str(tmp_path / "two"),
    ]
    two = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert two.returncode == 0, two.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert sorted(two.stdout.split()) == sorted(str(tmp_path / "two" / n) for n in names)
    for n in names:
        a, b = Image.open(tmp_path / "one" / n), Image.open(tmp_path / "two" / n)
        # Each process batches its own share: up to float rounding between batch sizes (docs/generate.md).
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1, n
        assert a.text["latentdiff"] == b.text["latentdiff"]
