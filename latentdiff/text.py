"""Prompt encoding: CLIP embeddings, with long prompts encoded in chunks, never truncated.

A prompt that fits the encoder's window (77 tokens: BOS + 75 + EOS) is encoded exactly as
diffusers does. A longer one is split into 75-token chunks, each wrapped in BOS/EOS and
padded, encoded separately and concatenated along the sequence axis (as AUTOMATIC1111 and
ComfyUI do); the cross-attention UNet accepts any sequence length.

Every token carries a weight (A1111 emphasis, see `prompt_syntax`); `BREAK` starts a new
chunk. Weights are applied to the encoder's output the A1111 way: scale each token's
embedding, then rescale the chunk so its mean is what it was.
"""

from __future__ import annotations

import torch

from .prompt_syntax import BREAK, fragments

Chunk = tuple[list[int], list[float]]  # up to 75 token ids and their weights


def token_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids without BOS/EOS and without truncation."""
    return tokenizer(prompts, add_special_tokens=False, truncation=False, verbose=False).input_ids


def chunk_count(tokenizer, prompts: list[str]) -> int:
    """How many 75-token chunks the longest plain-text prompt needs (at least 1)."""
    size = tokenizer.model_max_length - 2
    return max(1, *(-(-len(ids) // size) for ids in token_ids(tokenizer, prompts)))


def prompt_chunks(tokenizer, prompt: str, syntax: str = "plain") -> list[Chunk]:
    """The prompt's tokens with their weights, in pieces of at most 75; BREAK ends a piece."""
    size = tokenizer.model_max_length - 2
    frags = fragments(prompt, syntax)
    texts = [text for text, w in frags if (text, w) != BREAK]
    ids_per_text = iter(token_ids(tokenizer, texts) if texts else [])
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    for frag in frags:
        if frag == BREAK:
            chunks.append((ids, weights))
            ids, weights = [], []
            continue
        for tok in next(ids_per_text):
            if len(ids) == size:
                chunks.append((ids, weights))
                ids, weights = [], []
            ids.append(tok)
            weights.append(frag[1])
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def tokenize_weighted(tokenizer, prompts: list[str], n_chunks: int | None = None,
                      syntax: str = "plain") -> tuple[torch.Tensor, torch.Tensor]:
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
        id_rows.append([[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
                        + [pad] * (window - 2 - len(ids)) for ids, _ in chunks])
        weight_rows.append([[1.0, *w] + [1.0] * (window - 1 - len(w)) for _, w in chunks])
    return torch.tensor(id_rows, dtype=torch.long), torch.tensor(weight_rows, dtype=torch.float32)


def tokenize(tokenizer, prompts: list[str], n_chunks: int | None = None) -> torch.Tensor:
    """Ids shaped (B, n_chunks, window) of plain text (no emphasis syntax)."""
    return tokenize_weighted(tokenizer, prompts, n_chunks)[0]


def emphasize(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's emphasis on (N, window, D) chunk embeddings: multiply each token's embedding by
    its weight, then restore each chunk's mean. All-ones weights leave `hidden` bit-identical."""
    if bool((weights == 1).all()):
        return hidden
    z = hidden.float()
    before = z.mean(dim=(1, 2), keepdim=True)
    z = z * weights.to(z.device, torch.float32).unsqueeze(-1)
    after = z.mean(dim=(1, 2), keepdim=True)
    ratio = torch.where(after == 0, torch.ones_like(after), before / after)  # a chunk weighted to nothing
    return (z * ratio).to(hidden.dtype)


def clip_hidden(text_encoder, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """(N, window) ids -> (N, window, D): the last layer's output, or with `clip_skip` N > 1
    (A1111 numbering) the output of the N-th layer from the end, through the final layer norm,
    as A1111 and diffusers' `clip_skip=N-1` do."""
    if clip_skip == 1:
        return text_encoder(ids)[0]
    out = text_encoder(ids, output_hidden_states=True)
    model = getattr(text_encoder, "text_model", text_encoder)  # transformers < 5 nests it one level down
    return model.final_layer_norm(out.hidden_states[-clip_skip])


@torch.no_grad()
def encode(text_encoder, ids: torch.Tensor, weights: torch.Tensor | None = None, clip_skip: int = 1) -> torch.Tensor:
    """(B, n_chunks, window) ids (and weights) -> (B, n_chunks * window, D) hidden states."""
    b, n, w = ids.shape
    hidden = clip_hidden(text_encoder, ids.reshape(b * n, w).to(text_encoder.device), clip_skip)  # (B*n, w, D)
    if weights is not None:
        hidden = emphasize(hidden, weights.reshape(b * n, w))
    return hidden.reshape(b, n * w, hidden.shape[-1])


def encode_prompts(tokenizer, text_encoder, prompts: list[str], negatives: list[str] | None,
                   syntax: str = "plain", clip_skip: int = 1):
    """Embeddings for prompts and (if given) their negatives, padded to the same chunk count."""
    ids, weights = tokenize_weighted(tokenizer, prompts + (negatives or []), syntax=syntax)
    hidden = encode(text_encoder, ids, weights, clip_skip)
    if negatives is None:
        return hidden, None
    return hidden[: len(prompts)], hidden[len(prompts) :]


def check_clip_skip(clip_skip, text_encoder_config) -> int:
    """1 <= clip_skip <= the encoder's layer count (A1111 numbering: 1 = last layer)."""
    from .errors import UsageError

    layers = int(text_encoder_config.num_hidden_layers)
    if int(clip_skip) != clip_skip or not 1 <= clip_skip <= layers:
        raise UsageError(f"clip_skip must be a whole number from 1 (last layer) to {layers} for this model's "
                         f"text encoder, got {clip_skip}")
    return int(clip_skip)
