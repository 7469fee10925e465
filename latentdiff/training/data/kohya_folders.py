"""kohya's dataset layout: a top-level folder named `N_name` (e.g. `10_sks dog`) shows each of its
images N times an epoch, and an image in it without a caption takes `name` as its caption (kohya's
DreamBooth-style class tokens). Images elsewhere count `--repeats` times."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePosixPath

_FOLDER = re.compile(r"(\d+)_(.+)")


def _parse(rel: str) -> tuple[int, str] | None:
    """(N, name) for an image in a top-level N_name folder (path relative to the dataset), else None."""
    parts = PurePosixPath(rel).parts
    match = _FOLDER.fullmatch(parts[0]) if len(parts) > 1 else None
    if not match:
        return None
    # 19 digits and more are past any ceiling (bounds.check_epoch refuses them); int() of thousands is slow
    n = int(match[1]) if len(match[1]) <= 18 else 10**18
    return (n, match[2].strip()) if n >= 1 else None


class KohyaFolders:
    """Each image's repeats and folder caption; remembers the N_name folders it was asked about."""

    def __init__(self, repeats: int = 1):
        self.default = repeats
        self.used: Counter = Counter()  # {(folder, N): images counted}

    def repeats(self, rel: str) -> int:
        found = _parse(rel)
        if found is None:
            return self.default
        self.used[PurePosixPath(rel).parts[0], found[0]] += 1
        return found[0]

    def captions(self, uncaptioned) -> dict[str, str]:
        """{relpath: name} for the uncaptioned images that lie in an N_name folder."""
        return {rel: found[1] for rel in uncaptioned if (found := _parse(rel)) and found[1]}

    def notes(self, records: list) -> list[str]:
        """One line naming each N_name folder's repeats and the epoch's length, when anything repeats."""
        seen = sum(r.repeats for r in records)
        if seen == len(records):
            return []
        shown = ", ".join(f"{folder!r} x{n} ({count} image(s))" for (folder, n), count in sorted(self.used.items()))
        folders = f"kohya folders {shown}; " if shown else ""
        return [f"repeats: {folders}an epoch is {seen} samples of {len(records)} image(s)"]
