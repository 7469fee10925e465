"""A1111's `AND`: a prompt made of sub-prompts, each with a weight (`a cat AND a hat :1.5`).

As A1111's `get_multicond_prompt_list`: the prompt is split at each word `AND` (anywhere, brackets
or not); a sub-prompt ending in `:NUMBER` (spaces allowed around the colon) has that weight, else 1,
and loses trailing whitespace. A single sub-prompt with a trailing `:1.5` is weighted too. Linear:
no backtracking expression over the text.
"""

from __future__ import annotations

import re

_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """(text, weight) per sub-prompt, in order."""
    return [_weighted(part) for part in _AND.split(prompt)]


def _weighted(part: str) -> tuple[str, float]:
    text = part.rstrip()
    colon = text.rfind(":")
    if colon != -1 and _WEIGHT.fullmatch(text, colon + 1 + _spaces(text, colon + 1)):
        return text[:colon].rstrip(), float(text[colon + 1 :])
    return text, 1.0


def _spaces(text: str, start: int) -> int:
    n = start
    while n < len(text) and text[n].isspace():
        n += 1
    return n - start
