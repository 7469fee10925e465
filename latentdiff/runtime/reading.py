"""Reading the files users give us, bounded in bytes, time and nesting.

Every user file that is read into memory goes through here: it must be a regular file (a FIFO,
a device or a socket is refused at once instead of blocking or reading forever), no larger than
the limit its kind has, and structured text (JSON, YAML) may nest at most MAX_DEPTH deep. Each
refusal is one `UsageError` (or the `error` class the caller names) that says which file and why.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from latentdiff.errors import UsageError

MiB = 2**20
MAX_TEXT_BYTES = 16 * MiB  # prompt lists, captions, configs, metadata files
MAX_CONFIG_BYTES = 4 * MiB  # one JSON/YAML config of a model or a run
MAX_DEPTH = 32  # configs and metadata nest 3-4 deep; 32 leaves room and stays far from recursion limits
# Values in one loaded YAML file with its aliases expanded: a 4 MiB config holds ~1M at most, while
# nine lines of aliases (`b: [*a, *a, ...]`) expand to 9**9 (billion laughs) for whatever walks them.
MAX_VALUES = 1_000_000

_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def size_text(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n:,} bytes"


def open_regular(path: str | os.PathLike, what: str, error: type[Exception] = UsageError) -> int:
    """A read-only descriptor of `path`, which must be a regular file. Opening never blocks (a
    FIFO with no writer would), and the check is on the opened file, so no swap in between."""
    try:
        _refuse_special(os.stat(path).st_mode, path, what, error)  # names a socket, which open() cannot
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be opened: {e.strerror or e}") from None
    try:
        _refuse_special(os.fstat(fd).st_mode, path, what, error)
    except Exception:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


def _refuse_special(mode: int, path, what: str, error: type[Exception]) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise error(f"{what} {path} is {kind}; give a regular file")


def check_regular(path: str | os.PathLike, what: str, error: type[Exception] = UsageError) -> None:
    """Refuse at once a `path` that is not a regular file (before a library opens it itself)."""
    os.close(open_regular(path, what, error))


def read_bytes(path: str | os.PathLike, what: str, limit: int, error: type[Exception] = UsageError) -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    fd = open_regular(path, what, error)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        data = f.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise error(f"{what} {path} is {size_text(max(size, len(data)))}; at most {size_text(limit)} is read")
    return data


def read_text(
    path: str | os.PathLike, what: str, limit: int = MAX_TEXT_BYTES, error: type[Exception] = UsageError
) -> str:
    """A regular file of at most `limit` bytes as UTF-8 text (a leading BOM is dropped). A byte
    that is not UTF-8 is refused with its offset, NUL bytes too (no text file of ours holds one)."""
    data = read_bytes(path, what, limit, error)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x})") from None
    if "\0" in text:
        raise error(f"{what} {path} holds a NUL byte (at character {text.index(chr(0))}); it is not a text file")
    return text


def nesting_depth(text: str) -> int:
    """How deep the brackets of JSON (or YAML flow) `text` nest, in one linear pass that skips
    the insides of strings."""
    depth = deepest = 0
    quote = None
    escaped = False
    for c in text:
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c == '"':
            quote = c
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def check_depth(text: str, what: str, error: type[Exception] = UsageError) -> None:
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise error(f"{what} nests {depth} levels deep; at most {MAX_DEPTH} are read")


def parse_json(text: str, what: str, error: type[Exception] = UsageError):
    """`text` as JSON, refused in one line when it is damaged or nests deeper than MAX_DEPTH."""
    check_depth(text, what, error)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as e:  # ValueError: an int too long to parse
        raise error(f"{what} is not valid JSON: {str(e).splitlines()[0][:200]}") from None


def read_json(path: str | os.PathLike, what: str, limit: int = MAX_CONFIG_BYTES, error=UsageError):
    return parse_json(read_text(path, what, limit, error), f"{what} {path}", error)


def parse_yaml(text: str, what: str, error: type[Exception] = UsageError):
    """`text` as YAML (safe_load), refused in one line when damaged or too deep. Block nesting
    is bounded by the same limit through the loaded value."""
    import yaml

    check_depth(text, what, error)
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise error(f"{what} is not valid YAML: {str(e).splitlines()[0][:200]}") from None
    if value_count(value) > MAX_VALUES:
        raise error(f"{what} holds more than {MAX_VALUES:,} values with its aliases expanded (an alias bomb?)")
    if value_depth(value) > MAX_DEPTH:
        raise error(f"{what} nests more than {MAX_DEPTH} levels deep")
    return value


def read_yaml(path: str | os.PathLike, what: str, limit: int = MAX_CONFIG_BYTES, error=UsageError):
    return parse_yaml(read_text(path, what, limit, error), f"{what} {path}", error)


def value_depth(value, limit: int = MAX_DEPTH + 1) -> int:
    """How deep a loaded value nests (counted up to `limit`, without recursion)."""
    deepest, level = 0, [value]
    while level and deepest < limit:
        inner = []
        for v in level:
            if isinstance(v, dict):
                inner.extend(v.values())
            elif isinstance(v, (list, tuple)):
                inner.extend(v)
        if inner or any(isinstance(v, (dict, list, tuple)) for v in level):
            deepest += 1
        level = inner
    return deepest


def value_count(value, limit: int = MAX_VALUES + 1) -> int:
    """How many values a loaded value holds, shared ones (YAML aliases) counted each time they are
    reached, as json.dumps or a walk would (counted up to `limit`, so bounded in time)."""
    count, todo = 0, [value]
    while todo and count < limit:
        v = todo.pop()
        count += 1
        if isinstance(v, dict):
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
    return count


def is_special(path: str | os.PathLike) -> bool:
    """True for an existing path that is neither a regular file nor a folder."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))
