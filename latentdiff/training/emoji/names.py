"""The names side of the emoji dataset: Unicode's emoji-test.txt read into `Emoji` records, and
the held-out split.

Held-out split: among names ending in exactly one skin tone (": light skin tone" ... ": dark
skin tone", not a pair like "light skin tone, dark skin tone"), the k-th base name in order of
first appearance holds out its tone number k mod 5 (light, medium-light, medium, medium-dark,
dark). A base without that tone holds out nothing; in emoji-test.txt 15.0 every such base has
all five, so this never happens there. The held-out images are still written, marked
split="heldout", so evaluation can ask for a skin tone the model never saw on that base.
Caveat: Noto draws all five "snowboarder" tones the same (no skin shows), so that one
held-out picture is in effect also in train.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import read_text

DEFAULT_EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
APT_COMMAND = "apt-get update && apt-get install -y fonts-noto-color-emoji unicode-data libraqm0"

SKIN_TONES = (
    "light skin tone",
    "medium-light skin tone",
    "medium skin tone",
    "medium-dark skin tone",
    "dark skin tone",
)

_LINE = re.compile(r"^([0-9A-Fa-f]+(?: [0-9A-Fa-f]+)*)\s*;\s*([a-z-]+)\s*#\s*(.*)$")
# The comment is "<emoji> E<version> <name>"; the name is everything after the version tag.
_COMMENT = re.compile(r"^\S+\s+E\d+\.\d+\s+(.+?)\s*$")


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified emoji-test.txt line. `index` counts these lines from 0 in file order."""

    codepoints: str  # as in the file, e.g. "1F6B4 1F3FF 200D 2640 FE0F"
    name: str  # CLDR name, the caption, e.g. "woman biking: dark skin tone"
    group: str
    subgroup: str
    index: int

    @property
    def chars(self) -> str:
        return "".join(chr(int(cp, 16)) for cp in self.codepoints.split())


def missing_input(what: str, path: Path, option: str) -> UsageError:
    return UsageError(f"{what} not found at {path}; install it with `{APT_COMMAND}` or pass {option} PATH")


def parse_emoji_test(path: str | Path) -> list[Emoji]:
    """Read emoji-test.txt and return its fully-qualified emoji in file order.

    Component, minimally-qualified and unqualified lines are left out: they are other
    spellings of emoji already listed (or bare skin-tone swatches), not new pictures.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise missing_input("emoji-test.txt", path, "--emoji-test")
    group = subgroup = ""
    emojis: list[Emoji] = []
    for lineno, line in enumerate(read_text(path, "--emoji-test").splitlines(), 1):
        line = line.strip()
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        comment = _COMMENT.match(m.group(3)) if m else None
        if comment is None:
            raise UsageError(
                f"{path}:{lineno}: expected 'CODEPOINTS ; STATUS # EMOJI "
                f"E<version> NAME' as in Unicode's emoji-test.txt, got {line!r}"
            )
        if m.group(2) == "fully-qualified":
            codepoints = " ".join(m.group(1).upper().split())
            emojis.append(Emoji(codepoints, comment.group(1), group, subgroup, len(emojis)))
    if not emojis:
        raise UsageError(f"{path} has no fully-qualified emoji lines; is it emoji-test.txt?")
    return emojis


def single_skin_tone(name: str) -> tuple[str, str] | None:
    """("waving hand", "dark skin tone") for "waving hand: dark skin tone"; None otherwise."""
    base, sep, tone = name.rpartition(": ")
    return (base, tone) if sep and tone in SKIN_TONES else None


def heldout_names(emojis: list[Emoji]) -> set[str]:
    """Names never trained on: one skin tone per base, rotating through the five tones.

    Rotating (rather than always holding out, say, "dark") keeps every tone in training and
    tests whether the model combines a base it knows with a tone it saw on other bases.
    """
    bases: dict[str, dict[str, str]] = {}  # insertion order = order of first appearance
    for e in emojis:
        split = single_skin_tone(e.name)
        if split:
            bases.setdefault(split[0], {})[split[1]] = e.name
    held = set()
    for k, tones in enumerate(bases.values()):
        name = tones.get(SKIN_TONES[k % len(SKIN_TONES)])
        if name is not None:  # the base lacks this tone: hold out nothing for it
            held.add(name)
    return held
