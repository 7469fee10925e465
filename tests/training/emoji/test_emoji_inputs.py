"""eval-emoji / build-emoji inputs (issue 24): the dataset's metadata.jsonl and emoji-test.txt read
bounded (depth, size, UTF-8, FIFOs), rows checked, and the seed and grid-name counts bounded."""

import json
import os

import pytest

from latentdiff.cli.main import main
from latentdiff.errors import UsageError
from latentdiff.training.emoji.evaluate import load_rows
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
