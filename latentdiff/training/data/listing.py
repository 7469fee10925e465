"""The dataset's lists of files for people: `skipped.txt` (one "relpath<TAB>reason" line a file), and
the one-line refusals that concern many files, which name the first one or two and the file that
lists them all (the run folder's `skipped.txt`, or a temporary file; never one inside the dataset).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

from latentdiff.training.atomic import write_whole

LISTING = "skipped.txt"
SHOWN = 2  # names a one-line refusal shows; the rest are in the listing
SHOWN_CHARS = 80  # of each shown name (a path may be thousands of characters)


# Control characters and every other character str.splitlines breaks at (\x0b, \x1c, \x85, \u2028...)
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(32), *range(127, 160)]} | {0x2028: "\\u2028", 0x2029: "\\u2029"}
_ESCAPES = str.maketrans({**_CONTROLS, ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def escape(text: str) -> str:
    """One line of UTF-8 for any name: control characters, line breaks of any kind and bytes that
    are not UTF-8 (held as surrogates) as \\xNN (\\t, \\n, \\r, \\\\ as themselves)."""
    text = text.translate(_ESCAPES)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name holds (a metadata row's "\\ud800")
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def write_listing(rows: list[tuple[str, str]], out_dir: str | os.PathLike | None, dataset: Path | None = None) -> Path:
    """Write `rows` as OUT_DIR/skipped.txt (whole or not at all: atomic.write_whole), or as a new
    temporary file when `out_dir` is None or lies inside `dataset`."""
    lines = "".join(f"{escape(rel)}\t{escape(reason)}\n" for rel, reason in rows).encode("utf-8")
    if out_dir is not None and not (dataset is not None and _inside(Path(out_dir), dataset)):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return write_whole(Path(out_dir) / LISTING, lines)
    fd, tmp = tempfile.mkstemp(prefix="latentdiff-skipped-", suffix=".txt")
    with os.fdopen(fd, "wb") as f:
        f.write(lines)
    return Path(tmp)


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def _shown(names: list[str]) -> str:
    cut = [n if len(n) <= SHOWN_CHARS else n[: SHOWN_CHARS - 3] + "..." for n in map(escape, names[:SHOWN])]
    return ", ".join(cut) + (", ..." if len(names) > SHOWN else "")


def _where(rows, out_dir, dataset: Path) -> str:
    try:
        return f"all listed in {write_listing(rows, out_dir, dataset)}"
    except OSError as e:
        return f"(the full list could not be written: {e.strerror or e})"


def missing_captions_message(
    uncaptioned: list[str], skipped: list[tuple[str, str]], caption_extension: str, out_dir, dataset: Path
) -> str:
    """One line: how many images have no caption, the first ones, and the file listing them all
    (with the files skipped so far, so the listing is the dataset's whole story)."""
    why = f"no caption (no {caption_extension} beside it and no metadata.jsonl/.csv row)"
    rows = sorted([*((rel, why) for rel in uncaptioned), *skipped])
    return (
        f"{len(uncaptioned)} image(s) have no caption (no {caption_extension} beside them and no metadata.jsonl/"
        f".csv row): {_shown(uncaptioned)}; {_where(rows, out_dir, dataset)}; add captions, or pass "
        "--missing-captions empty to train them with an empty caption"
    )


def all_bad_message(skipped: list[tuple[str, str]], out_dir, dataset: Path) -> str:
    """One line: none of the dataset's images is usable, the commonest reason, the first names, and
    the file listing every one with its reason."""
    # Reasons carry file-specific detail after a colon or parenthesis; group by the lead phrase.
    kinds = Counter(reason.split(":")[0].split(" (")[0] for _, reason in skipped)
    reason, count = kinds.most_common(1)[0]
    return (
        f"no usable images under {escape(str(dataset))!r}: all {len(skipped)} were skipped, most often for "
        f"'{escape(reason)[:200]}' ({count} of {len(skipped)}): {_shown([rel for rel, _ in skipped])}; "
        f"{_where(skipped, out_dir, dataset)} with the reasons"
    )
