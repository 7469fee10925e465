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


def _top_level(text: str) -> list[str]:
    """`text` split at its top-level brackets, as ComfyUI's parse_parentheses does (unbalanced
    brackets included: a stray `)` takes the nesting below zero)."""
    result, current, level = [], "", 0
    for char in text:
        if char == "(":
            if level == 0:
                if current:
                    result.append(current)
                current = "("
            else:
                current += char
            level += 1
        elif char == ")":
            level -= 1
            if level == 0:
                result.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        result.append(current)
    return result


def _group(item: str, weight: float) -> tuple[str, float]:
    """A bracketed group's inner text and weight: the weight times 1.1, or the number after its last
    ':' when that parses (then that number alone). One deliberate difference: a weight that is not
    finite (`nan`, `inf`, `1e400`), which would make the image NaN, is text."""
    inner = item[1:-1]
    colon = inner.rfind(":")
    weight *= 1.1
    if colon > 0:
        try:
            number = float(inner[colon + 1 :])
        except ValueError:
            return inner, weight
        if math.isfinite(number):
            return inner[:colon], number
    return inner, weight


def parse_comfy(text: str) -> list[tuple[str, float]]:
    """(text, weight) runs of a prompt, in order, as ComfyUI's token_weights gives them (escapes
    kept as ComfyUI keeps them until it tokenizes: see `unescape`)."""
    text = text.replace("\\)", _CLOSE).replace("\\(", _OPEN)
    out: list[tuple[str, float]] = []
    todo: list[tuple[bool, str, float]] = [(True, text, 1.0)]  # (to split?, text, weight), last first
    while todo:
        split, part, weight = todo.pop()
        if not split:
            out.append((part, weight))
            continue
        items = []
        for item in _top_level(part):
            if len(item) >= 2 and item[0] == "(" and item[-1] == ")":
                items.append((True, *_group(item, weight)))
            else:
                items.append((False, item, weight))
        todo.extend(reversed(items))
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
