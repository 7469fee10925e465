"""Crash-safe checkpoints: write to a temporary folder, add the manifest last, rename into place.

A kill at any moment leaves either the old set of checkpoints or the old set plus one new
complete checkpoint; a folder without a manifest is never resumed from. Old checkpoints are
removed only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from latentdiff.errors import LatentDiffError, UsageError
from latentdiff.runtime.reading import read_json
from latentdiff.training.atomic import fsync_dir, write_synced

MANIFEST = "manifest.json"
PREFIX, TMP_PREFIX = "step-", ".tmp-step-"
MANIFEST_BYTES = 2**20  # a manifest lists a checkpoint's few files


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def _fsync_tree(path: Path) -> None:
    """Every file under `path`, then every folder, deepest first: their data and their entries on disk."""
    found = sorted(path.rglob("*"))
    for f in found:
        if f.is_file() and not f.is_symlink():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for folder in sorted((f for f in found if f.is_dir() and not f.is_symlink()), key=lambda f: -len(f.parts)):
        fsync_dir(folder)


def save_checkpoint(
    out: Path, step: int, write: Callable[[Path], None], keep: int | None = None, extra: dict | None = None
) -> Path:
    """Call `write(tmp_dir)` to fill a new checkpoint for `step`, then publish it atomically."""
    root = checkpoint_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TMP_PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)  # debris of an earlier interrupted save
    try:
        tmp.mkdir()
        write(tmp)
        files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        manifest = {"step": step, "time": time.time(), "files": files, **(extra or {})}
        write_synced(tmp / MANIFEST, json.dumps(manifest, indent=2))
        # Files, manifest and folders on disk before the rename: a power cut then leaves no renamed
        # checkpoint whose manifest (or weights) is empty.
        _fsync_tree(tmp)
        fsync_dir(tmp)
    except Exception as e:  # noqa: BLE001 - a full disk, most often; torch.save says so as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, LatentDiffError):
            raise
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {str(e)[:200]}"
        raise LatentDiffError(
            f"could not write the checkpoint for step {step} ({_disk_note(root)}{why}); the earlier checkpoints "
            "are kept and --resume continues from the last one"
        ) from None
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)  # the rename itself
    if keep is not None:
        prune(out, keep)
    return final


def _disk_note(root: Path) -> str:
    """'the disk is full: ' where `root`'s file system has (nearly) no room left, else ''."""
    try:
        return "the disk is full: " if shutil.disk_usage(root).free < 2**20 else ""
    except OSError:
        return ""


def is_complete(path: Path) -> bool:
    """A checkpoint counts only if its manifest exists and every listed file has its size."""
    try:
        manifest = read_manifest(path)
    except UsageError:
        return False
    return all((path / f).is_file() and (path / f).stat().st_size == n for f, n in manifest["files"].items())


def complete_checkpoints(out: Path) -> list[Path]:
    root = checkpoint_dir(out)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(out: Path) -> Path | None:
    done = complete_checkpoints(out)
    return done[-1] if done else None


def read_manifest(path: Path) -> dict:
    """The manifest, checked: a tampered one is a UsageError naming the checkpoint."""
    manifest = read_json(path / MANIFEST, f"checkpoint {path.name}'s", MANIFEST_BYTES)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    step = manifest.get("step") if isinstance(manifest, dict) else None
    ok = (
        isinstance(files, dict)
        and all(
            isinstance(n, int) and ".." not in Path(f).parts and not Path(f).is_absolute() for f, n in files.items()
        )
        and isinstance(step, int)
        and not isinstance(step, bool)
        and path.name == f"{PREFIX}{step:08d}"
        and _counter(manifest.get("ema_updates", 0), int)
        and _counter(manifest.get("train_seconds", 0.0), (int, float))
    )
    if not ok:
        raise UsageError(f"checkpoint {path} has a damaged {MANIFEST}")
    return manifest


def _counter(value, kind) -> bool:
    """A count the manifest may carry (EMA updates, seconds trained): a finite number >= 0."""
    return isinstance(value, kind) and not isinstance(value, bool) and 0 <= value < float("inf")


def incomplete_after(out: Path, last: Path | None) -> str:
    """'' or one clause naming the newest checkpoint folder after `last` that is not complete and why
    (a file shorter than its manifest says, a file that is not a regular file, a damaged manifest)."""
    root, after = checkpoint_dir(out), int(last.name[len(PREFIX) :]) if last is not None else -1
    steps = {}
    for p in root.iterdir() if root.is_dir() else ():
        digits = p.name[len(PREFIX) :]
        if p.name.startswith(PREFIX) and digits.isascii() and digits.isdigit() and p.is_dir():
            steps[int(digits)] = p
    if not steps or max(steps) <= after:
        return ""
    folder = steps[max(steps)]
    try:
        files = read_manifest(folder)["files"]
    except UsageError:
        return f"{folder.name} is incomplete (its {MANIFEST} is missing or damaged)"
    for name, size in files.items():
        f, shown = folder / name, "".join(c if c.isprintable() else repr(c)[1:-1] for c in name[:100])
        if not f.is_file():
            return f"{folder.name} is incomplete ({shown} is missing or not a regular file)"
        if f.stat().st_size != size:
            return f"{folder.name} is incomplete ({shown} has {f.stat().st_size:,} bytes, its {MANIFEST} says {size:,})"
    return ""


def require_finite(named: Iterable, step: int) -> None:
    """Refuse to checkpoint non-finite weights: the last good checkpoint must stay the last one."""
    import torch

    for name, p in named:
        if not bool(torch.isfinite(p.detach()).all()):
            raise LatentDiffError(
                f"weights became non-finite by step {step} ({name}); not writing a checkpoint, "
                "the earlier ones are kept; try a lower --lr"
            )


@contextlib.contextmanager
def damaged_checkpoint(path: Path):
    """Loading a checkpoint's files: anything unreadable is one line naming the checkpoint."""
    try:
        yield
    except LatentDiffError:
        raise
    except Exception as e:  # noqa: BLE001 - torch/safetensors report damage with many exception types
        raise UsageError(
            f"checkpoint {path} is damaged ({type(e).__name__}: {_first_sentence(e)}); "
            "delete that folder to resume from the one before it"
        ) from None


def _first_sentence(e: BaseException) -> str:
    """The loader's own first sentence, at most 160 characters: torch's later ones advise
    `weights_only=False`, which would let a checkpoint run code."""
    text = " ".join(str(e).split())
    end = text.find(". ")
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= 160 else text[:157] + "..."


def load_torch(path: Path):
    """Optimizer/schedule/RNG state; weights_only: a checkpoint must never be able to run code."""
    import torch

    return torch.load(path, weights_only=True)


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def prune(out: Path, keep: int) -> None:
    """Delete the oldest complete checkpoints beyond `keep` (and leftover temporary folders)."""
    done = complete_checkpoints(out)
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in checkpoint_dir(out).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
