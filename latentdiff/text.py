"""Prompt tokenizing for CLIP: long prompts in chunks, never truncated (`conditioning.py` encodes).

A prompt that fits the encoder's window (77 tokens: BOS + 75 + EOS) is encoded exactly as
diffusers does. A longer one is split into 75-token chunks, each wrapped in BOS/EOS and
padded, encoded separately and concatenated along the sequence axis (as AUTOMATIC1111 and
ComfyUI do); the cross-attention UNet accepts any sequence length.
"""

from __future__ import annotations

import torch


def _chunks(ids: list[int], size: int, n_chunks: int) -> list[list[int]]:
    pieces = [ids[i : i + size] for i in range(0, len(ids), size)]
    return (pieces + [[]] * n_chunks)[:n_chunks]  # pad with empty chunks, or truncate


def token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids without BOS/EOS and without truncation."""
    return tokenizer(prompts, add_special_tokens=False, truncation=False, verbose=False).input_ids


def chunk_count(tokenizer, prompts: list[str]) -> int:
    """How many 75-token windows the longest of `prompts` needs (at least one)."""
    size = tokenizer.model_max_length - 2
    return max(1, *(-(-len(ids) // size) for ids in token_ids(tokenizer, prompts)))


def tokenize(tokenizer, prompts: list[str], n_chunks: int | None = None) -> torch.Tensor:
    """Ids shaped (B, n_chunks, window); each chunk is BOS + up to 75 tokens + EOS + padding."""
    window = tokenizer.model_max_length
    size = window - 2
    all_ids = token_ids(tokenizer, prompts)
    if n_chunks is None:
        n_chunks = max(1, *(-(-len(ids) // size) for ids in all_ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for ids in all_ids:
        chunks = []
        for piece in _chunks(ids, size, n_chunks):
            chunk = [tokenizer.bos_token_id, *piece, tokenizer.eos_token_id]
            chunks.append(chunk + [pad] * (window - len(chunk)))
        rows.append(chunks)
    return torch.tensor(rows, dtype=torch.long)
