"""Prompt emphasis as AUTOMATIC1111 users write it: `(word)`, `(word:1.3)`, `[word]`, `\\(`, `BREAK`.

A port of the semantics of A1111's `prompt_parser.parse_prompt_attention`, so a prompt copied
from the web means here what it meant there:

- `(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by 1.1; they nest.
- `(text:1.3)` multiplies it by 1.3 (the number may be signed and have spaces around it).
- `\\(`, `\\)`, `\\[`, `\\]`, `\\\\` are the literal characters.
- `BREAK` (upper case, a word of its own) ends the current 75-token chunk; inside brackets it
  is no BREAK but the word, at A1111's weight (-1 times the brackets' factors).
- Nothing is an error: a `(` or `[` never closed weights the rest of the prompt (as in A1111),
  a stray `)` or `]` and a `:` outside a weight are plain text.

One deliberate difference from A1111: a weight that is not a number (`(x:1.2.3)`) is text
instead of a crash.
"""

from __future__ import annotations

import re

from latentdiff.errors import UsageError
from latentdiff.prompts.comfy_syntax import parse_comfy, unescape

SYNTAXES = ("a1111", "plain", "comfy")  # comfy: prompts/comfy_syntax.py
BREAK = ("BREAK", -1.0)  # the marker a fragment list holds where a BREAK was written
ROUND, SQUARE = 1.1, 1 / 1.1

_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes, and a lone backslash
    \(|\[|                        # openers
    :\s*([+-]?[.\d]+)\s*\)|       # ':1.3)' closes a round bracket with a weight
    \)|]|                         # closers
    [^\\()\[\]:]+|                # plain text
    :                             # a colon that starts no weight
    """,
    re.X,
)
_BREAK = re.compile(r"\bBREAK\b")


def parse(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) fragments, neighbours of equal weight merged;
    a BREAK is the fragment `BREAK`. An empty prompt is `[("", 1.0)]`."""
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:  # a BREAK too: inside brackets it is the word, weighted -1.1 (A1111)
            item[1] *= factor

    for m in _ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            if not _is_number(weight):  # '(x:1.2.3)': the would-be weight is text, ')' still closes
                res.append([piece[:-1], 1.0])
            multiply(round_open.pop(), float(weight) if _is_number(weight) else ROUND)
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_split_break(piece)):
                if i:
                    res.append(list(BREAK))
                res.append([part, 1.0])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)
    return _merge(res) or [("", 1.0)]


def _split_break(piece: str) -> list[str]:
    """`piece` split at each word BREAK, the whitespace around it dropped: what splitting at
    `\\s*\\bBREAK\\b\\s*` gives, in linear time (that expression tried its leading \\s* from every
    space of a long run of spaces: 3.6 s for 10,000 of them, 8 minutes for 100,000)."""
    parts, start = [], 0
    for m in _BREAK.finditer(piece):
        parts.append(piece[start : m.start()].rstrip())
        start = m.end()
        while start < len(piece) and piece[start].isspace():
            start += 1
    parts.append(piece[start:])
    return parts


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _merge(res: list[list]) -> list[tuple[str, float]]:
    out: list[list] = []
    for text, weight in res:
        if out and out[-1][1] == weight:
            out[-1][0] += text
        else:
            out.append([text, weight])
    return [(t, w) for t, w in out]


def fragments(text: str, syntax: str = "a1111") -> list[tuple[str, float]]:
    """`parse(text)` for the A1111 syntax; the whole text at weight 1 for `plain`; ComfyUI's runs for `comfy`."""
    if syntax == "plain":
        return [(text, 1.0)]
    if syntax == "comfy":
        return [(unescape(t), w) for t, w in parse_comfy(text)]
    if syntax != "a1111":
        raise UsageError(f"unknown prompt syntax {syntax!r}; choose one of: {', '.join(SYNTAXES)}")
    return parse(text)
