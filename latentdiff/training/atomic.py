"""Writing a run's small files whole or not at all, even across a power cut: the data is fsynced under
a temporary name in the same folder, renamed over the old file, and the folder is fsynced so that
the rename itself is on disk. A crash leaves the old file or the new one, never an empty or half one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from latentdiff.runtime.files import new_file_mode


def fsync_dir(path: str | os.PathLike) -> None:
    """Put `path`'s entries (files created, renamed or removed in it) on disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `path` (a new file in a folder that is renamed into place later) and fsync it."""
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def write_whole(path: str | os.PathLike, data: bytes | str) -> Path:
    """Replace (or create) `path` with `data` atomically and durably; its mode is what open() gives."""
    return replace_with(path, lambda f: f.write(data.encode("utf-8") if isinstance(data, str) else data))


def replace_with(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Replace (or create) `path` with what `write(file)` writes, atomically and durably."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
