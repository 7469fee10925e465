"""Caption metadata files of a training dataset: Hugging Face imagefolder's `metadata.jsonl` rows
{"file_name": ..., "text": ...} and `metadata.csv` with `file_name` and `text` columns, each row
checked (a file inside the dataset, a string caption, UTF-8 text) with its line in the error.
A row may name a conditioning image (`finetune --method controlnet`) in a `conditioning_image`
column (diffusers' train_controlnet.py's default), or `conditioning_image_file_name` (imagefolder's
name for a second image column) or `conditioning_file_name`: a file inside the dataset too.

Reading is bounded (runtime/reading.py): a regular file of at most MAX_METADATA_BYTES (a FIFO or a
device is refused at once), each JSON line at most MAX_DEPTH deep, each caption at most
MAX_CAPTION_CHARS, and no NUL byte in a name."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterator

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import MiB, parse_json, read_text

MAX_METADATA_BYTES = 128 * MiB  # a million rows of 100-byte captions; read whole, then held as captions
MAX_CAPTION_CHARS = 65_536  # ~16k tokens: 200+ chunks of 77 a caption, far past any real caption
MAX_ALT_TEXTS = 64  # alternative captions a row may give (alt_texts)
CONDITIONING_COLUMNS = ("conditioning_image", "conditioning_image_file_name", "conditioning_file_name")


def read_metadata(root: Path, meta: Path) -> Iterator[tuple[str, str, str | None, str | None, tuple[str, ...]]]:
    """Yield (relpath from root, caption, split, conditioning image's relpath or None, alternative
    captions) for each row of a metadata file."""
    where = meta.relative_to(root).as_posix()
    text = read_text(meta, "metadata file", MAX_METADATA_BYTES)
    rows = _jsonl_rows(text, where) if meta.suffix == ".jsonl" else _csv_rows(text, where)
    for line, row in rows:
        name, caption = row.get("file_name"), row.get("text")
        if not isinstance(name, str) or not name or not isinstance(caption, str):
            raise UsageError(f"{where} row {line}: needs a 'file_name' and a string 'text' (got {row!r:.200})")
        rel = _inside(root, meta, name, f"{where} row {line}: file_name")
        if len(caption) > MAX_CAPTION_CHARS:
            raise UsageError(
                f"{where} row {line}: the caption is {len(caption):,} characters; at most "
                f"{MAX_CAPTION_CHARS:,} are trained on (long captions are encoded in 75-token chunks)"
            )
        column = next((c for c in CONDITIONING_COLUMNS if row.get(c) not in (None, "")), None)
        conditioning = None
        if column is not None:
            value = row[column]
            if not isinstance(value, str):
                raise UsageError(f"{where} row {line}: {column} must be a file name, got {value!r:.200}")
            conditioning = _inside(root, meta, value, f"{where} row {line}: {column}")
        split = row.get("split")
        yield (
            rel,
            caption.strip(),
            split if isinstance(split, str) else None,
            conditioning,
            _alt_texts(row, where, line),
        )


def _alt_texts(row: dict, where: str, line: int) -> tuple[str, ...]:
    """A row's optional `alt_texts`: more captions of the same image (build-emoji writes the name with
    its subgroup and its group), which `train-clip` samples from beside `text`."""
    alts = row.get("alt_texts")
    if alts in (None, ""):
        return ()
    if isinstance(alts, str):  # a metadata.csv column holds one
        alts = [alts]
    if not isinstance(alts, list) or not all(isinstance(a, str) for a in alts):
        raise UsageError(f"{where} row {line}: alt_texts must be a list of captions, got {alts!r:.200}")
    if len(alts) > MAX_ALT_TEXTS or any(len(a) > MAX_CAPTION_CHARS for a in alts):
        raise UsageError(
            f"{where} row {line}: alt_texts holds {len(alts):,} captions; at most {MAX_ALT_TEXTS} "
            f"of at most {MAX_CAPTION_CHARS:,} characters each are read"
        )
    return tuple(a.strip() for a in alts if a.strip())


def _inside(root: Path, meta: Path, name: str, label: str) -> str:
    """`name` (relative to the metadata file's folder) as a path relative to `root`, checked: a name
    a file can have, inside the dataset."""
    if "\0" in name:
        raise UsageError(f"{label} {name!r:.200} holds a NUL byte, which no file name can")
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        raise UsageError(f"{label} {name!r:.200} is not a name a file can have") from None
    target = os.path.normpath(meta.parent / name)
    if os.path.commonpath([str(root), target]) != str(root):
        raise UsageError(f"{label} {name!r:.200} is outside the dataset")
    return Path(target).relative_to(root).as_posix()


def _jsonl_rows(text: str, where: str) -> Iterator[tuple[int, dict]]:
    for line, row_text in enumerate(text.split("\n"), 1):
        if not row_text.strip():
            continue
        row = parse_json(row_text, f"{where} line {line}")
        if not isinstance(row, dict):
            example = '{"file_name": ..., "text": ...}'
            raise UsageError(f"{where} line {line} must be a JSON object like {example}")
        yield line, row


def _csv_rows(text: str, where: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    # The whole file is within MAX_METADATA_BYTES already, so csv's own field-size limit may go.
    limit = csv.field_size_limit(MAX_METADATA_BYTES)
    try:
        columns = reader.fieldnames or []
        if "file_name" not in columns or "text" not in columns:
            raise UsageError(f"{where} needs 'file_name' and 'text' columns; found {columns!r:.200}")
        return [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise UsageError(f"{where} line {reader.line_num} is not valid CSV: {e}") from None
    finally:
        csv.field_size_limit(limit)
