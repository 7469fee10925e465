"""Caption metadata files of a training dataset: Hugging Face imagefolder's `metadata.jsonl` rows
{"file_name": ..., "text": ...} and `metadata.csv` with `file_name` and `text` columns, each row
checked (a file inside the dataset, a string caption, UTF-8 text) with its line in the error."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator

from latentdiff.errors import UsageError


def read_metadata(root: Path, meta: Path) -> Iterator[tuple[str, str, str | None]]:
    """Yield (relpath from root, caption, split) for each row of a metadata file."""
    where = meta.relative_to(root).as_posix()
    rows = _jsonl_rows(meta, where) if meta.suffix == ".jsonl" else _csv_rows(meta, where)
    for line, row in _utf8(rows, where):
        name, text = row.get("file_name"), row.get("text")
        if not isinstance(name, str) or not name or not isinstance(text, str):
            raise UsageError(f"{where} row {line}: needs a 'file_name' and a string 'text' (got {row!r:.200})")
        target = os.path.normpath(meta.parent / name)
        if os.path.commonpath([str(root), target]) != str(root):
            raise UsageError(f"{where} row {line}: file_name {name!r} is outside the dataset")
        split = row.get("split")
        rel = Path(target).relative_to(root).as_posix()
        yield rel, text.strip(), split if isinstance(split, str) else None


def _utf8(rows: Iterator, where: str) -> Iterator:
    try:
        yield from rows
    except UnicodeDecodeError as err:
        raise UsageError(f"{where} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None


def _jsonl_rows(meta: Path, where: str) -> Iterator[tuple[int, dict]]:
    with open(meta, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise UsageError(f"{where} line {line} is not valid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                example = '{"file_name": ..., "text": ...}'
                raise UsageError(f"{where} line {line} must be a JSON object like {example}")
            yield line, row


def _csv_rows(meta: Path, where: str) -> Iterator[tuple[int, dict]]:
    with open(meta, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "file_name" not in columns or "text" not in columns:
            raise UsageError(f"{where} needs 'file_name' and 'text' columns; found {columns}")
        for row in reader:
            yield reader.line_num, row
