"""How every command's flag values are read from argv: numbers strictly (finite, within what a
64-bit integer holds, ASCII digits only) and text only when it is UTF-8 without NUL characters.

`register_types(parser)` makes argparse use these for `type=int`, `type=float`, `type=str` and
untyped arguments, so a command declaring its flags the plain argparse way is covered as well as
the ones derived from a config (config/flags.py). A refusal is argparse's one line, exit 2;
`flag_message` words it as the rest of latentdiff does ("--steps must be ..., got ...").
Standard library only: this loads at `--help` time.
"""

from __future__ import annotations

import argparse
import math
import re

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what torch and numpy take; every count, size and seed fits far below
# Float options are scales, rates, fractions and sizes (GB, MB), all far below; up to 2**53 a float
# still holds every whole number exactly, so sizes computed from one (GB * 2**30) stay exact.
REAL_MAX = 2.0**53
MAX_NUMBER_CHARS = 64  # a number written longer is refused before it is converted (int() of 10**5000 is slow)
_INT = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.I)
_OURS = re.compile(r"argument ([^ :]+): (must be |is |holds |file |value )")  # our readers' refusals


def shown(text: str, limit: int = 40) -> str:
    """`text` for an error line: cut to `limit` characters."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def text_problem(text: str) -> str | None:
    """Why `text` cannot be used as text (a NUL, or a byte that is not UTF-8: Python hands argv's
    undecodable bytes over as lone surrogates), or None."""
    if "\0" in text:
        return f"holds a NUL character (at character {text.index(chr(0))})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}, a lone surrogate"
        return f"is not UTF-8 text ({what} at character {e.start})"
    return None


def text_arg(text: str) -> str:
    """A text or path argument, which must be UTF-8 without NUL (what the PNGs we write record)."""
    problem = text_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def number(text: str) -> int | float | None:
    """`text` as an int (ASCII digits) or a float (nan and inf included), or None when it is no
    number or longer than any number we take (converting 5,000 digits is slow, and refused)."""
    t = text.strip()
    if len(t) > MAX_NUMBER_CHARS:
        return None
    if _INT.fullmatch(t):
        return int(t)
    return float(t) if _REAL.fullmatch(t) else None


def whole_number(text: str) -> int:
    """A whole number written in ASCII digits, within a signed 64-bit integer."""
    value = number(text)
    if not isinstance(value, int):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {shown(text)!r}")
    if value > INT_MAX:
        raise argparse.ArgumentTypeError(f"must be <= {INT_MAX}, got {shown(text.strip())}")
    if value < INT_MIN:
        raise argparse.ArgumentTypeError(f"must be >= {INT_MIN}, got {shown(text.strip())}")
    return value


def finite_number(text: str) -> float:
    """A finite number written in ASCII (nan, inf and 1e999 refused)."""
    value = number(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"must be a number, got {shown(text)!r}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {shown(text.strip())}")
    if abs(value) > REAL_MAX:
        raise argparse.ArgumentTypeError(f"must be between -2**53 and 2**53, got {shown(text.strip())}")
    return float(value)


whole_number.__name__, finite_number.__name__ = "int", "float"  # how argparse's own messages name them


def register_types(parser: argparse.ArgumentParser) -> None:
    """Make `parser`'s (and its argument groups') `type=int/float/str` and untyped arguments use
    the strict readers above."""
    for plain, strict in ((int, whole_number), (float, finite_number), (str, text_arg), (None, text_arg)):
        parser.register("type", plain, strict)


def flag_message(message: str) -> str:
    """argparse's "argument --steps: must be ..." as "--steps must be ..." (our types' refusals)."""
    m = _OURS.match(message)
    return f"{m.group(1)} {message[len('argument ') + len(m.group(1)) + 2 :]}" if m else message
