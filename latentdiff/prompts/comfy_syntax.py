"""Prompt weights as ComfyUI reads them (comfy/sd1_clip.py `token_weights`, `parse_parentheses`,
`tokenize_with_weights`; read for behaviour, our code), for `prompt_syntax="comfy"`.

How it differs from A1111's syntax (prompts/syntax.py):
- `(text)` multiplies by 1.1 and nests, but `(text:1.3)` *sets* the weight to 1.3: the brackets'
  factors around it do not multiply it (`((a:1.5))` is 1.5; in A1111 1.65).
- `[text]` is text, no de-emphasis; `BREAK`, prompt editing, `AND` and `<lora:...>` tags are text.
- Only `\\(` and `\\)` are escapes.
- Each run of text at one weight is tokenized as a whole and kept in one 75-token chunk where it
  fits (a run of 8 or more tokens is split at the chunk's end, a shorter one moves to the next
  chunk, which is padded), no comma backtracking.
- The weights act on the encoder's output differently (families/clip.py `comfy_token_weights`): a
  weighted token's embedding is moved away from the empty prompt's at that position,
  `(z - z_empty) * w + z_empty`, with no mean restoring.

Iterative where ComfyUI recurses, so deeply nested brackets cannot exhaust Python's stack.
"""

from __future__ import annotations

import math

Chunk = tuple[list[int], list[float]]
LARGE_RUN = 8  # ComfyUI's max_word_length: a run this long may be split across chunks
_OPEN, _CLOSE = "\0\2", "\0\1"


def _top_level(text: str) -> list[tuple[int, int]]:
    """(start, end) of each item of `text` split at its top-level brackets, as ComfyUI's
    parse_parentheses splits it (unbalanced brackets included: a stray `)` takes the nesting below
    zero, and only a `)` that brings it back to zero ends an item)."""
    items, start, level = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            if level == 0 and i > start:
                items.append((start, i))
                start = i
            level += 1
        elif char == ")":
            level -= 1
            if level == 0:
                items.append((start, i + 1))
                start = i + 1
    if start < len(text):
        items.append((start, len(text)))
    return items


class _Item:
    """A bracketed top-level item, read in one pass: inside it the nesting never goes below zero,
    so each `(` closes where the nesting from it first returns to zero (`close`), whatever span it is
    read in. `colon[i]` / `bracket[i]`: the last ':' / bracket before i."""

    def __init__(self, text: str):
        self.text, self.close, open_ = text, {}, []
        self.colon, self.bracket = [-1] * (len(text) + 1), [-1] * (len(text) + 1)
        for i, char in enumerate(text):
            if char == "(":
                open_.append(i)
            elif char == ")" and open_:
                self.close[open_.pop()] = i
            self.colon[i + 1] = i if char == ":" else self.colon[i]
            self.bracket[i + 1] = i if char in "()" else self.bracket[i]

    def spans(self, a: int, b: int) -> list[tuple[bool, int, int]]:
        """ComfyUI's items of text[a:b]: (bracketed, start, end); a `(` not closed inside the span
        takes the rest of it."""
        items, start = [], a
        i = self.text.find("(", a, b)
        while i != -1:
            if i > start:
                items.append((False, start, i))
            j = self.close.get(i)
            start = j + 1 if j is not None and j < b else b
            items.append((True, i, start))
            i = self.text.find("(", start, b)
        if start < b:
            items.append((False, start, b))
        return items

    def group(self, a: int, b: int, weight: float) -> tuple[int, float]:
        """Where the text of bracketed text[a:b] ends and its weight: the weight times 1.1, or the
        number after its last ':' (not the first character) when that parses (then that number alone).
        One deliberate difference: a weight that is not finite (`nan`, `1e400`; ComfyUI's images turn
        NaN) is text."""
        colon, weight = self.colon[b - 1], weight * 1.1
        if colon >= a + 2 and self.bracket[b - 1] < colon:  # a number holds no bracket
            try:
                number = float(self.text[colon + 1 : b - 1])
            except ValueError:
                return b - 1, weight
            if math.isfinite(number):
                return colon, number
        return b - 1, weight


def parse_comfy(text: str) -> list[tuple[str, float]]:
    """(text, weight) runs of a prompt, in order, as ComfyUI's token_weights gives them (escapes
    kept as ComfyUI keeps them until it tokenizes: see `unescape`). Linear in the prompt's length:
    each character is read at one nesting level only."""
    text = text.replace("\\)", _CLOSE).replace("\\(", _OPEN)
    out: list[tuple[str, float]] = []
    for start, end in _top_level(text):
        piece = text[start:end]
        if len(piece) < 2 or piece[0] != "(" or piece[-1] != ")":
            out.append((piece, 1.0))
            continue
        item = _Item(piece)
        todo = [(True, 0, len(piece), 1.0)]  # (bracketed?, start, end, weight), the last one first
        while todo:
            bracketed, a, b, weight = todo.pop()
            if bracketed and b - a >= 2 and piece[b - 1] == ")":
                end_, inner = item.group(a, b, weight)
                todo.extend((k, x, y, inner) for k, x, y in reversed(item.spans(a + 1, end_)))
            elif b > a:
                out.append((piece[a:b], weight))
    return out


def unescape(text: str) -> str:
    return text.replace(_CLOSE, ")").replace(_OPEN, "(")


def comfy_chunks(tokenizer, prompt: str) -> list[Chunk]:
    """The prompt's tokens and weights in pieces of at most window - 2, placed as ComfyUI's
    tokenize_with_weights places them."""
    size = tokenizer.model_max_length - 2
    runs = [(unescape(t), w) for t, w in parse_comfy(prompt)]
    runs = [(t, w) for t, w in runs if t]
    ids_per_run = tokenizer([t for t, _ in runs], add_special_tokens=False, truncation=False, verbose=False).input_ids
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    for run_ids, (_, w) in zip(ids_per_run if runs else [], runs):
        large = len(run_ids) >= LARGE_RUN
        while run_ids:
            if len(ids) + len(run_ids) <= size:
                ids, weights = ids + run_ids, weights + [w] * len(run_ids)
                break
            room = size - len(ids)
            if large:
                ids, weights = ids + run_ids[:room], weights + [w] * len(run_ids[:room])
                run_ids = run_ids[room:]
            chunks.append((ids, weights))
            ids, weights = [], []
    chunks.append((ids, weights))
    return chunks
