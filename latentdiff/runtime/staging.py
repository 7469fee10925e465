"""Model files written whole or not at all (`convert`, `save_pretrained`).

What is written goes to a temporary name first, in the destination's own folder (so the final
step is a rename on the same file system), and takes its name only once complete. Any failure on
the way (a full disk, Ctrl-C, a library error) removes what was written, and the folders this made
for it; a failure to write becomes one `LatentDiffError` naming the destination and the reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from latentdiff.errors import LatentDiffError


@contextmanager
def staged_file(dst: Path, what: str):
    """Yield a temporary path beside `dst` to write the file into; then link it to `dst`, which
    fails rather than replace a file that appeared meanwhile."""
    made = _missing(dst.parent)
    tmp = None
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.link(tmp, dst)
    except BaseException as e:
        _remove(tmp)
        tmp = None
        _remove_folders(made)
        _raise_write_error(e, dst, what)
        raise
    finally:
        _remove(tmp)


@contextmanager
def staged_folder(out: Path, what: str):
    """Yield a new empty folder inside `out` (made if missing) to write into; then each entry
    written takes the place of `out`'s entry of that name (a file replaced, a folder swapped), and
    `out`'s other entries stay as they were."""
    made = _missing(out)
    tmp = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
        yield tmp
        _move_in(tmp, out)
    except BaseException as e:
        _remove(tmp)
        tmp = None
        _remove_folders(made)
        _raise_write_error(e, out, what)
        raise
    finally:
        _remove(tmp)


def _move_in(tmp: Path, out: Path) -> None:
    for entry in sorted(tmp.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=out))
            target.rename(old / entry.name)
            entry.rename(target)
            shutil.rmtree(old, ignore_errors=True)
            continue
        if entry.is_dir() and (target.exists() or target.is_symlink()):
            target.unlink()
        os.replace(entry, target)


def _missing(folder: Path) -> list[Path]:
    """The folders on the way to `folder` (itself included) that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_folders(folders: list[Path]) -> None:
    """Remove the (now empty) folders this made, innermost first; one something else filled stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _remove(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _raise_write_error(e: BaseException, dst: Path, what: str) -> None:
    """A failure to write (an OSError, or a library's error wrapping one) as one LatentDiffError;
    anything else is left to propagate."""
    reason = write_error_reason(e)
    if reason is not None:
        raise LatentDiffError(f"cannot write {what} {dst}: {reason}; nothing was left behind") from None


def write_error_reason(e: BaseException) -> str | None:
    """Why writing failed, for an OSError or safetensors' error around one ("I/O error: ..."); else None."""
    if isinstance(e, OSError):
        return e.strerror or str(e) or type(e).__name__
    text = str(e)
    if type(e).__name__ == "SafetensorError" and "I/O error" in text:
        return text.split("I/O error:", 1)[1].split(" (os error")[0].strip()
    return None
