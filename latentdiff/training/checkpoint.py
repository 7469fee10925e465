"""Crash-safe checkpoints: write to a temporary folder, add the manifest last, rename into place.

A kill at any moment leaves either the old set of checkpoints or the old set plus one new
complete checkpoint; a folder without a manifest is never resumed from. Old checkpoints are
removed only after the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"
PREFIX, TMP_PREFIX = "step-", ".tmp-step-"


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def _fsync_tree(path: Path) -> None:
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def save_checkpoint(out: Path, step: int, write: Callable[[Path], None], keep: int | None = None,
                    extra: dict | None = None) -> Path:
    """Call `write(tmp_dir)` to fill a new checkpoint for `step`, then publish it atomically."""
    root = checkpoint_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TMP_PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)  # debris of an earlier interrupted save
    tmp.mkdir()
    write(tmp)
    files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
    _fsync_tree(tmp)
    manifest = {"step": step, "time": time.time(), "files": files, **(extra or {})}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep is not None:
        prune(out, keep)
    return final


def is_complete(path: Path) -> bool:
    """A checkpoint counts only if its manifest exists and every listed file has its size."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all((path / f).is_file() and (path / f).stat().st_size == n for f, n in manifest["files"].items())


def complete_checkpoints(out: Path) -> list[Path]:
    root = checkpoint_dir(out)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(out: Path) -> Path | None:
    done = complete_checkpoints(out)
    return done[-1] if done else None


def read_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def prune(out: Path, keep: int) -> None:
    """Delete the oldest complete checkpoints beyond `keep` (and leftover temporary folders)."""
    done = complete_checkpoints(out)
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in checkpoint_dir(out).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
