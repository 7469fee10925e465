"""A model folder is user data: read its JSON files and the file names they hold without trusting
them. The lowest layer of models/ (the standard library, errors and runtime/reading only).

- configs must be JSON objects (diffusers treats anything else as a hub id and answers with
  "check your internet connection"), read bounded in bytes and nesting (runtime/reading.py);
- a FIFO, device or socket where a model file belongs is refused at once, never opened;
- every file a folder names (sharded index files, latentdiff.json) must lie inside it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from latentdiff.errors import ModelError
from latentdiff.runtime.reading import check_regular, read_json


def is_present(path: Path, what: str) -> bool:
    """True for a regular file, False where nothing is; a FIFO, device, socket or folder where a
    file of the model belongs is refused at once (reading a FIFO would block forever)."""
    if not os.path.exists(path):
        return False
    check_regular(path, what, ModelError)
    return True


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in `path` (at most reading.MAX_CONFIG_BYTES, nested at most MAX_DEPTH
    deep), or one ModelError saying what is wrong with the file."""
    if not is_present(path, f"{what} config"):
        raise ModelError(f"{what} config {path} is missing")
    data = read_json(path, f"{what} config", error=ModelError)
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
