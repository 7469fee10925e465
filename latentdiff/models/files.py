"""A model folder is user data: read its JSON files and the file names they hold without trusting
them. The lowest layer of models/ (the standard library and errors only).

- configs must be JSON objects (diffusers treats anything else as a hub id and answers with
  "check your internet connection");
- every file a folder names (sharded index files, latentdiff.json) must lie inside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from latentdiff.errors import ModelError


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in `path`, or one ModelError saying what is wrong with the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{what} config {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelError(f"{what} config {path} is not valid JSON: {e}") from None
    except OSError as e:
        raise ModelError(f"{what} config {path} cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} config {path} must hold a JSON object, not {type(data).__name__}")
    return data


def confined(folder: Path, name, what: str) -> Path:
    """`folder / name` for a file name read from a model file; refuse names that leave the folder
    (absolute, drive letters, `..`) and links whose target is outside the model or its hub cache."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ModelError(f"{what} names a file {name!r}, which is not a file name")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or ":" in name:
        raise ModelError(f"{what} names {name!r}, outside its folder {folder}; refusing to open it")
    path = folder / pure
    if path.is_symlink() and not _inside(path.resolve(), _allowed_root(folder)):
        raise ModelError(f"{what} names {name!r}, a link that leads outside the model; refusing to open it")
    return path


def _allowed_root(folder: Path) -> Path:
    """The model's own folder, or for a Hugging Face cache snapshot its repository folder (whose
    blobs/ the snapshot's links point into)."""
    resolved = folder.resolve()
    for parent in resolved.parents:
        if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
            return parent.parent
    return resolved


def _inside(path: Path, root: Path) -> bool:
    return os.path.commonpath([str(path), str(root)]) == str(root)


def first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
