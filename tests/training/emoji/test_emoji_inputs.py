"""eval-emoji / build-emoji inputs (issue 24): the dataset's metadata.jsonl and emoji-test.txt read
bounded (depth, size, UTF-8, FIFOs), rows checked, and the seed and grid-name counts bounded."""

import contextlib
import json
import os
import signal

import numpy as np
import pytest
from helpers import memory_cap
from PIL import Image

from latentdiff.cli.main import main
from latentdiff.errors import UsageError
from latentdiff.training.emoji.evaluate import load_references, load_rows, ranks
from latentdiff.training.emoji.names import parse_emoji_test


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"file_name": "a.png", "text": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "nests 5001 levels"),
        (b"\xff\n", "not UTF-8"),
        (b'["a list"]\n', "line 1 must be"),
        (b'{"file_name": "../../etc/x.png", "text": "x"}\n', "outside the dataset"),
        (b'{"file_name": 3, "text": "x"}\n', "line 1 must be"),
    ],
    ids=["deep", "bytes", "list", "escape", "type"],
)
def test_damaged_emoji_metadata_is_one_line(tmp_path, content, words):
    (tmp_path / "metadata.jsonl").write_bytes(content)
    with pytest.raises(UsageError, match=words) as e:
        load_rows(tmp_path)
    assert "\n" not in str(e.value)


def test_fifo_metadata_and_emoji_test_are_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "metadata.jsonl")
    with pytest.raises(UsageError, match="FIFO"):
        load_rows(tmp_path)
    os.mkfifo(tmp_path / "emoji-test.txt")
    with pytest.raises(UsageError, match="FIFO"):
        parse_emoji_test(tmp_path / "emoji-test.txt")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--seeds", ",".join(map(str, range(100)))], "--seeds: at most 64"),
        (["--seeds", "9" * 5000], "--seeds"),
        (["--grid", "g.png", "--grid-names", ";".join(f"n{i}" for i in range(300))], "--grid-names: at most 256"),
    ],
)
def test_eval_emoji_counts_are_bounded(tmp_path, capsys, argv, words):
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x"}) + "\n")
    assert main(["eval-emoji", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


@contextlib.contextmanager
def within(seconds: int):
    """Fail (instead of hanging the suite) when the block takes longer than `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hung")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _references(root, images: dict):
    (root / "images").mkdir(parents=True)
    for name, make in images.items():
        make(root / "images" / name)
    rows = [{"file_name": f"images/{name}", "text": name} for name in images]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _png(path, size=16):
    Image.new("RGB", (size, size), "red").save(path)


@pytest.mark.parametrize(
    "make, words",
    [
        (os.mkfifo, "not a regular file"),
        (lambda p: (_png(p, 64), p.write_bytes(p.read_bytes()[:60])), "truncated or corrupt"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: _png(p, 1100), "over the 1,048,576-pixel limit"),
    ],
    ids=["fifo", "truncated", "empty", "too-large"],
)
def test_a_bad_reference_image_is_one_line_at_once(tmp_path, make, words):
    dataset = _references(tmp_path / "ds", {"a.png": _png, "b.png": make})
    with within(10), pytest.raises(UsageError, match=words) as e:
        load_references(dataset)
    assert "\n" not in str(e.value) and "images/b.png" in str(e.value)


def test_references_are_the_pixels_they_were(tmp_path):
    dataset = _references(tmp_path / "ds", {"a.png": _png, "b.png": lambda p: _png(p, 64)})
    rows, refs = load_references(dataset)
    assert [r["text"] for r in rows] == ["a.png", "b.png"] and refs.shape == (2, 768)
    assert np.allclose(refs[:, 0::3], 1.0) and np.allclose(refs[:, 1::3], 0.0)


def test_a_fifo_swapped_in_after_the_check_never_blocks(tmp_path, monkeypatch):
    """load_image checks the opened file, so a swap between its stat and its open cannot hang."""
    dataset = _references(tmp_path / "ds", {"a.png": os.mkfifo})
    regular = os.stat(tmp_path / "ds" / "metadata.jsonl")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p).endswith("a.png") else real_stat(p, *a, **k))
    with within(10), pytest.raises(UsageError, match="not a regular file|is a FIFO"):
        load_references(dataset)


def test_eval_emoji_on_a_fifo_reference_is_one_line(tmp_path, capsys):
    dataset = _references(tmp_path / "ds", {"a.png": os.mkfifo})
    with within(60):
        assert main(["eval-emoji", str(dataset), "--model", str(tmp_path / "no-model"), "--seeds", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err


def test_ranks_hold_one_image_against_the_references_at_a_time():
    rng = np.random.default_rng(0)
    refs = rng.random((20_000, 768), dtype=np.float32)  # 61 MB; the (32, N, 768) difference would be 2 GB
    refs[7] = refs[3]  # a tie is not counted as closer
    generated = np.concatenate([refs[:8] + 0.01, rng.random((24, 768), dtype=np.float32)])
    targets = [*range(8), *rng.integers(0, len(refs), 24).tolist()]
    with memory_cap(600 * 2**20):
        got = ranks(generated, targets, refs)
    small = refs[:500]
    d = ((generated[:, None, :] - small[None]) ** 2).sum(-1)
    few = [t % 500 for t in targets]
    expected = (d < d[np.arange(32), few][:, None] - 1e-9).sum(1)
    assert (got[:8] == 0).all() and (ranks(generated, few, small) == expected).all()


def test_emoji_metadata_rows_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("latentdiff.training.emoji.evaluate.MAX_ROWS", 3)
    (tmp_path / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": "a.png", "text": "x"}) + "\n" * 1 for _ in range(4))
    )
    with pytest.raises(UsageError, match="more than 3 rows") as e:
        load_rows(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("flag", ["--out", "--grid"])
@pytest.mark.parametrize("where", ["folder", "no-parent"])
def test_eval_emoji_outputs_are_checked_before_the_model_loads(tmp_path, capsys, flag, where):
    dataset = _references(tmp_path / "ds", {"a.png": _png})
    target = tmp_path if where == "folder" else tmp_path / "missing" / "r.json"
    assert main(["eval-emoji", str(dataset), flag, str(target), "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "loading" not in err, err
