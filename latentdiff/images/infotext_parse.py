"""Reading AUTOMATIC1111's parameters text (infotext) into its prompt, negative prompt and fields,
as A1111's own parser (modules/infotext_utils.py parse_generation_parameters) splits it, in one
linear pass."""

from __future__ import annotations

import json


def parse_infotext(text: str) -> tuple[str, str, dict]:
    """(prompt, negative prompt, {field: value}) of an A1111 parameters text, as A1111 reads it
    (its regular expression `\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)`, in one linear
    pass: the expression itself is quadratic in the length of a line without a colon)."""
    *lines, last = text.strip().split("\n")
    pairs = fields_of(last)
    if len(pairs) < 3:  # no parameters line: all of it is prompt
        lines.append(last)
        pairs = []
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    fields = {}
    for key, value in pairs:
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)  # a JSON string: it cannot nest
            except json.JSONDecodeError:
                pass
        fields[key.strip()] = value.strip()
    return "\n".join(prompt), "\n".join(negative), fields


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def fields_of(line: str) -> list[tuple[str, str]]:
    """The `key: value` pairs of A1111's parameters line, found where its expression finds them:
    a key is a word character and then word characters, spaces, '-' or '/' up to a colon; a value
    is a JSON-quoted string followed by ',' or the end, else everything up to the next comma."""
    pairs, i = [], 0
    while True:
        colon = line.find(":", i)
        if colon < 0:
            return pairs
        start = colon  # the key: the run of key characters before the colon, from its first word character
        while start > i and (_is_word(line[start - 1]) or line[start - 1] in " -/"):
            start -= 1
        while start < colon and not _is_word(line[start]):
            start += 1
        if colon - start < 2:
            i = colon + 1
            continue
        value_start = colon + 1
        while value_start < len(line) and line[value_start].isspace():
            value_start += 1
        end = _quoted_end(line, value_start)
        if end is None:
            end = line.find(",", value_start)
            end = len(line) if end < 0 else end
        pairs.append((line[start:colon], line[value_start:end]))
        i = end + 1


def _quoted_end(line: str, at: int) -> int | None:
    """Where a JSON-quoted value starting at `at` ends (its closing quote + 1), when a comma or the
    end of the line follows it; else None. The scan stops at the first unescaped quote, so no
    character is scanned twice by successive calls."""
    if at >= len(line) or line[at] != '"':
        return None
    j = at + 1
    while j < len(line) and line[j] != '"':
        j += 2 if line[j] == "\\" else 1
    if j >= len(line) or j == at + 1 or (j + 1 < len(line) and line[j + 1] != ","):
        return None
    return j + 1
