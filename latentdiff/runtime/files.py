"""Output files that are never half-written and never overwrite anything.

A file is written in full under a temporary name in its final folder, flushed to disk, and only
then given its final name by a hard link, which fails instead of replacing an existing file. So a
reader (or a crash, Ctrl-C or a full disk) sees either no file or the complete one, and two
processes writing into one folder never take the same name.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

from latentdiff.errors import LatentDiffError, UsageError

MAX_NUMBER = 100_000


def check_out_dir(out_dir: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that could never be written: a path that is (or
    passes through) a file. Nothing is created here: a run that fails later leaves no empty folder."""
    for part in (out_dir, *out_dir.parents):
        if part.exists():
            if not part.is_dir():
                raise UsageError(f"{flag} {out_dir}: {part} is a file, not a folder; choose another {flag}")
            if not os.access(part, os.W_OK | os.X_OK):
                raise UsageError(f"{flag} {out_dir}: {part} is not writable by you; choose another {flag}")
            return


def write_new(out_dir: Path, stem: str, suffix: str, write: Callable) -> Path:
    """Write a new file `out_dir/<stem>-NNNN<suffix>` with the first free number and return its
    path. `write(f)` writes the content to the binary file object `f`. On any failure, including
    KeyboardInterrupt, nothing is left behind; an OSError becomes one error naming the file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}-", suffix=".partial", dir=out_dir)
    except OSError as e:
        raise LatentDiffError(f"cannot write into {out_dir}: {_reason(e)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would hide the images from other users
        return _claim(tmp, out_dir, stem, suffix)
    except OSError as e:
        raise LatentDiffError(
            f"cannot write {_first_free(out_dir, stem, suffix)}: {_reason(e)}; no partial file was left"
        ) from None
    finally:
        _remove(tmp)


def _claim(tmp: Path, out_dir: Path, stem: str, suffix: str) -> Path:
    """Give the finished `tmp` the first free numbered name, never replacing a file."""
    for n in range(MAX_NUMBER):
        path = out_dir / f"{stem}-{n:04d}{suffix}"
        try:
            os.link(tmp, path)  # atomic, and fails if `path` exists
            return path
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        if _reserve_and_replace(tmp, path):  # a file system without hard links
            return path
    raise UsageError(f"{out_dir} already holds {MAX_NUMBER} files named {stem}-NNNN{suffix}; choose another --out")


def _reserve_and_replace(tmp: Path, path: Path) -> bool:
    """Reserve `path` with O_EXCL, then move `tmp` over the reservation (False: name taken)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(path)  # our own empty reservation, never someone else's file
        raise
    return True


def _first_free(out_dir: Path, stem: str, suffix: str) -> Path:
    n = 0
    while n < MAX_NUMBER and (out_dir / f"{stem}-{n:04d}{suffix}").exists():
        n += 1
    return out_dir / f"{stem}-{n:04d}{suffix}"


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # already gone (claimed by rename), or nothing more we can do


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


# ---- file modes -------------------------------------------------------------------------------
# mkstemp, and the safetensors writer (0.8 writes to a 0600 temporary file and renames it), leave
# files readable by their owner only: weights a team shares, or a server run as another user, could
# not read them. Files we write get what open() would give them: 0666 less the umask (0644 usually).


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # no /proc: read it by setting it (briefly process-wide)
    os.umask(old)
    return old


def new_file_mode() -> int:
    return 0o666 & ~_umask()


def as_umask_allows(*paths) -> None:
    """Give files just written (or every file under folders just written) the mode a plain open()
    would have given them."""
    mode = new_file_mode()
    for path in map(Path, paths):
        for f in path.rglob("*") if path.is_dir() else [path]:
            if f.is_file() and not f.is_symlink():
                os.chmod(f, mode)
