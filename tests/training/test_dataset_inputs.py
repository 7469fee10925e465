"""Dataset contents an attacker (or a damaged disk) gives finetune and train-vae: NUL bytes and
non-UTF-8 bytes in names, deep and oversized metadata, oversized and special caption files. Each is
skipped with its reason or refused in one line; none is a traceback, a hang or unbounded reading."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.data import metadata
from latentdiff.training.data.scan import scan_dataset


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGB", (64, 64), "red").save(root / "a.png")
    (root / "a.txt").write_text("a red square")
    return root


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_a_nul_in_a_metadata_file_name_is_one_line(folder):
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a\0.png", "text": "x"}) + "\n")
    with pytest.raises(UsageError) as e:
        scan_dataset(folder, 64)
    assert "metadata.jsonl row 1" in one_line(e) and "NUL" in str(e.value)


def test_a_nul_in_a_metadata_csv_is_one_line(folder):
    (folder / "metadata.csv").write_bytes(b"file_name,text\na\x00.png,x\n")
    with pytest.raises(UsageError, match="NUL") as e:
        scan_dataset(folder, 64)
    one_line(e)


@pytest.mark.parametrize("field", ["dataset", "out", "model"])
def test_a_nul_in_a_path_option_is_one_line(field):
    values = {"dataset": "d", "out": "o", "model": "m", field: "x\0y"}
    label = "DATASET" if field == "dataset" else f"--{field}"
    with pytest.raises(UsageError, match=f"{label} 'x.x00y' holds a NUL byte"):
        FinetuneConfig(**values)


def test_a_broken_image_with_a_non_utf8_name_is_listed_in_skipped_txt(folder, tmp_path):
    name = os.fsdecode(b"\xff\xfe broken.png")
    Path(folder, name).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Path(folder, os.fsdecode(b"\xff\xfe broken.txt")).write_text("x")
    scan = scan_dataset(folder, 64)
    assert [r.path.name for r in scan.records] == ["a.png"]
    path = scan.write_skipped(tmp_path / "out")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("\\xff\\xfe broken.png\t") and len(text.splitlines()) == 1, text


def test_deeply_nested_metadata_is_one_line(folder):
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "x", "d": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    )
    with pytest.raises(UsageError, match="metadata.jsonl line 1 nests 100001 levels deep") as e:
        scan_dataset(folder, 64)
    one_line(e)


def test_oversized_metadata_and_long_lines_are_refused_unread(folder, monkeypatch):
    monkeypatch.setattr(metadata, "MAX_METADATA_BYTES", 1000)
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x" * 2000}) + "\n")
    with pytest.raises(UsageError, match="metadata.jsonl .* at most 1,000 bytes") as e:
        scan_dataset(folder, 64)
    one_line(e)
    (folder / "metadata.jsonl").unlink()
    (folder / "metadata.csv").write_text("file_name,text\na.png," + "x" * 2000 + "\n")
    with pytest.raises(UsageError, match="metadata.csv .* at most 1,000 bytes"):
        scan_dataset(folder, 64)


def test_a_huge_caption_is_refused_or_skipped(folder):
    (folder / "metadata.csv").write_text("file_name,text\na.png," + "x" * 200_000 + "\n")
    (folder / "a.txt").unlink()
    with pytest.raises(UsageError, match="metadata.csv row 2: the caption is 200,000 characters; at most") as e:
        scan_dataset(folder, 64)
    one_line(e)
    (folder / "metadata.csv").unlink()
    Image.new("RGB", (64, 64), "blue").save(folder / "b.png")
    (folder / "b.txt").write_text("x" * 200_000)
    (folder / "a.txt").write_text("ok")
    scan = scan_dataset(folder, 64)
    assert [r.path.name for r in scan.records] == ["a.png"]
    assert "caption file b.txt holds 200,000 characters; at most 65,536" in dict(scan.skipped)["b.png"]


@pytest.mark.parametrize("name", ["metadata.jsonl", "metadata.csv", "a.txt"])
def test_special_files_in_the_place_of_metadata_or_captions(folder, name):
    target = folder / name
    target.unlink(missing_ok=True)
    os.mkfifo(target)  # opening it for reading would wait for a writer forever
    Image.new("RGB", (64, 64), "blue").save(folder / "b.png")
    (folder / "b.txt").write_text("blue")
    scan = scan_dataset(folder, 64)
    trained = ["b.png"] if name == "a.txt" else ["a.png", "b.png"]
    assert [r.path.name for r in scan.records] == trained
    (skipped, reason), *_ = scan.skipped
    assert skipped == ("a.png" if name == "a.txt" else name) and "not a regular file" in reason


def test_a_fifo_swapped_in_after_the_scan_looked_is_refused_at_once(folder, monkeypatch):
    """The check is on the opened file, so a swap between stat and open cannot make it block."""
    os.unlink(folder / "a.txt")
    os.mkfifo(folder / "a.txt")
    monkeypatch.setattr("latentdiff.training.data.scan._Root.problem", lambda self, path: None)
    with pytest.raises(UsageError, match="no usable images"):
        scan_dataset(folder, 64)


def test_non_utf8_captions_are_skipped_or_refused(folder):
    (folder / "a.txt").write_bytes(b"caf\xe9")
    Image.new("RGB", (64, 64), "blue").save(folder / "b.png")
    (folder / "b.txt").write_text("blue")
    scan = scan_dataset(folder, 64)
    assert "not UTF-8" in dict(scan.skipped)["a.png"]
    (folder / "metadata.csv").write_bytes(b"file_name,text\nc.png,caf\xe9\n")
    with pytest.raises(UsageError, match="metadata.csv is not UTF-8") as e:
        scan_dataset(folder, 64)
    one_line(e)


@pytest.mark.parametrize("char", ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\t", "\x00"])
def test_skipped_txt_keeps_one_line_per_file_whatever_the_name_holds(tmp_path, char):
    from latentdiff.training.data.listing import write_listing

    rows = [(f"a{char}b.png", f"why{char}not"), ("c.png", "fine")]
    text = write_listing(rows, tmp_path).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2 and text.splitlines()[1] == "c.png\tfine"


def test_none_usable_with_line_breaking_names_is_one_line(folder, tmp_path):
    (folder / "a.png").write_bytes(b"not a png")
    for name in ("b\n.png", "c\u2028.png"):
        (folder / name).write_bytes(b"nor this")
        (folder / name).with_suffix(".txt").write_text("x")
    with pytest.raises(UsageError, match="no usable images") as e:
        scan_dataset(folder, 64, report_dir=tmp_path / "run")
    assert "b\\n.png" in one_line(e)
    assert len((tmp_path / "run" / "skipped.txt").read_text().splitlines()) == 3
