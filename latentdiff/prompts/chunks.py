"""Prompt tokenizing for CLIP: long prompts in chunks, never truncated (`conditioning.py` encodes).

A prompt that fits the encoder's window (77 tokens: BOS + 75 + EOS) is encoded exactly as
diffusers does. A longer one is split into 75-token chunks, each wrapped in BOS/EOS and
padded, encoded separately and concatenated along the sequence axis (as AUTOMATIC1111 and
ComfyUI do); the cross-attention UNet accepts any sequence length.

Every token carries a weight (A1111 emphasis, see `prompt_syntax`); `BREAK` starts a new
chunk, and under the A1111 syntax a chunk that would overflow goes back to a comma in its last 20
tokens, both as A1111's `tokenize_line` does. `conditioning.apply_token_weights` applies the
weights to the encoder's output.
"""

from __future__ import annotations

import torch

from latentdiff.prompts.comfy_syntax import comfy_chunks
from latentdiff.prompts.syntax import BREAK, fragments

Chunk = tuple[list[int], list[float]]  # up to 75 token ids and their weights
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"


def token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids without BOS/EOS and without truncation."""
    return tokenizer(prompts, add_special_tokens=False, truncation=False, verbose=False).input_ids


def chunk_count(tokenizer, prompts: list[str]) -> int:
    """How many 75-token windows the longest of `prompts` (plain text) needs (at least one)."""
    size = tokenizer.model_max_length - 2
    return max(1, *(-(-len(ids) // size) for ids in token_ids(tokenizer, prompts)))


def prompt_chunks(tokenizer, prompt: str, syntax: str = "plain") -> list[Chunk]:
    """The prompt's tokens with their weights, in pieces of at most 75.

    `plain`: the text cut every 75 tokens. `comfy`: as ComfyUI places them (prompts/comfy_syntax.py). `a1111`: A1111's `tokenize_line`: a BREAK ends a piece;
    a piece that would overflow goes back to its last comma when that comma is within the last
    `COMMA_BACKTRACK` tokens, and the tokens after the comma start the next piece."""
    if syntax == "comfy":
        return comfy_chunks(tokenizer, prompt)
    size = tokenizer.model_max_length - 2
    frags = fragments(prompt, syntax)
    texts = [text for text, w in frags if (text, w) != BREAK]
    ids_per_text = iter(token_ids(tokenizer, texts) if texts else [])
    comma = tokenizer.get_vocab().get(",</w>") if syntax == "a1111" else None
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1
    for frag in frags:
        if frag == BREAK:
            chunks.append((ids, weights))
            ids, weights, last_comma = [], [], -1
            continue
        for tok in next(ids_per_text):
            if comma is not None and tok == comma:
                last_comma = len(ids)
            elif len(ids) == size and last_comma != -1 and len(ids) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                chunks.append((ids[:cut], weights[:cut]))
                ids, weights, last_comma = ids[cut:], weights[cut:], -1
            if len(ids) == size:
                chunks.append((ids, weights))
                ids, weights, last_comma = [], [], -1
            ids.append(tok)
            weights.append(frag[1])
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def tokenize_weighted(
    tokenizer, prompts: list[str], n_chunks: int | None = None, syntax: str = "plain"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and weights shaped (B, n_chunks, window); each chunk is BOS + up to 75 tokens + EOS
    + padding (weight 1). Rows are padded with empty chunks to the longest (or truncated to
    `n_chunks`)."""
    window = tokenizer.model_max_length
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_prompt = [prompt_chunks(tokenizer, p, syntax) for p in prompts]
    if n_chunks is None:
        n_chunks = max(len(c) for c in per_prompt)
    id_rows, weight_rows = [], []
    for chunks in per_prompt:
        chunks = (chunks + [([], [])] * n_chunks)[:n_chunks]
        id_rows.append(
            [
                [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [pad] * (window - 2 - len(ids))
                for ids, _ in chunks
            ]
        )
        weight_rows.append([[1.0, *w] + [1.0] * (window - 1 - len(w)) for _, w in chunks])
    return torch.tensor(id_rows, dtype=torch.long), torch.tensor(weight_rows, dtype=torch.float32)


def tokenize(tokenizer, prompts: list[str], n_chunks: int | None = None) -> torch.Tensor:
    """Ids shaped (B, n_chunks, window) of plain text (no emphasis syntax)."""
    return tokenize_weighted(tokenizer, prompts, n_chunks)[0]
