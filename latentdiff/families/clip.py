"""CLIP text conditioning shared by the UNet families: prompts -> `Embeddings` (the
cross-attention context plus any extra UNet inputs). `Conditioning` is SD 1.x/2.x's: one CLIP
text encoder whose last hidden states are the context; SDXL's subclass lives in families/sdxl.py.

Prompts become `Embeddings` in two steps, so prompt syntax and weighting can plug in between:
`tokenize_weighted` (texts in a prompt syntax -> one (B, n_chunks, 77) id tensor and one weight
tensor of the same shape per encoder; `tokenize` keeps the ids) and `embed` (those ids and the
optional weights -> Embeddings, with an A1111 clip skip).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from latentdiff.errors import ModelError, UsageError
from latentdiff.prompts.chunks import prompt_chunks, tokenize_weighted
from latentdiff.runtime.offload import execution_device


@dataclass
class Embeddings:
    """A batch's conditioning: the context sequence plus any extra UNet inputs."""

    hidden: torch.Tensor  # (B, T, D) cross-attention context
    added: dict = field(default_factory=dict)  # SDXL: text_embeds (B, P), time_ids (B, 5 or 6)

    def cat(self, other: "Embeddings") -> "Embeddings":
        return Embeddings(
            torch.cat([self.hidden, other.hidden]), {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()}
        )

    def to(self, dtype=None, device=None) -> "Embeddings":
        return Embeddings(
            self.hidden.to(device=device, dtype=dtype),
            {k: v.to(device=device, dtype=dtype) for k, v in self.added.items()},
        )

    def __getitem__(self, rows: slice) -> "Embeddings":
        return Embeddings(self.hidden[rows], {k: v[rows] for k, v in self.added.items()})


def _padded(rows: list[Embeddings], empty: torch.Tensor) -> Embeddings:
    """Stack one-row Embeddings, padding the shorter ones with `empty` windows (the empty text's)."""
    longest = max(e.hidden.shape[1] for e in rows)
    hidden = torch.cat(
        [torch.cat([e.hidden, *[empty] * ((longest - e.hidden.shape[1]) // empty.shape[1])], 1) for e in rows]
    )
    return Embeddings(hidden, {k: torch.cat([e.added[k] for e in rows]) for k in rows[0].added})


def apply_token_weights(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """AUTOMATIC1111's emphasis: scale each token's embedding by its weight, then rescale each
    chunk (of each prompt) so its mean is what it was. hidden (B, n*w, D), weights (B, n, w).
    All-ones weights return `hidden` itself (bit-identical to no weighting)."""
    if bool((weights == 1).all()):
        return hidden
    b, n, w = weights.shape
    z = hidden.float().reshape(b, n, w, -1)
    before = z.mean(dim=(2, 3), keepdim=True)
    z = z * weights[..., None].to(z.device, torch.float32)
    after = z.mean(dim=(2, 3), keepdim=True)
    z = z * torch.where(after == 0, torch.ones_like(after), before / after)  # a chunk weighted to nothing
    return z.reshape(hidden.shape).to(hidden.dtype)


def comfy_token_weights(hidden: torch.Tensor, weights: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """ComfyUI's token weights (comfy/sd1_clip.py encode_token_weights): each weighted token's
    embedding moved away from the empty prompt's embedding at its position, (z - z_empty) * w + z_empty;
    tokens of weight 1 are left as they are. hidden (B, n*w, D), weights (B, n, w), empty (1, w, D)."""
    if bool((weights == 1).all()):
        return hidden
    b, n, w = weights.shape
    z = hidden.float().reshape(b, n, w, -1)
    e = empty.float().reshape(1, 1, w, -1).to(z.device)
    ws = weights[..., None].to(z.device, torch.float32)
    z = torch.where(ws != 1, (z - e) * ws + e, z)
    return z.reshape(hidden.shape).to(hidden.dtype)


def check_text_pair(tok, config) -> None:
    """A tokenizer its encoder can take: a window (model_max_length) of whole tokens the encoder has
    positions for, and special tokens inside its vocabulary; else one ModelError, not an index error."""
    window, positions = tok.model_max_length, config.max_position_embeddings
    if not isinstance(window, int) or isinstance(window, bool) or not 3 <= window <= positions:
        raise ModelError(
            f"the tokenizer's model_max_length is {window!r}: it must be a whole number of tokens from 3 "
            f"to the text encoder's {positions} positions (CLIP's is 77)"
        )
    for name in ("bos_token", "eos_token", "pad_token"):
        token_id = getattr(tok, f"{name}_id")
        if not isinstance(token_id, int) or not 0 <= token_id < config.vocab_size:
            raise ModelError(
                f"the tokenizer's {name} {getattr(tok, name)!r} is not in the text encoder's "
                f"vocabulary of {config.vocab_size} tokens"
            )


class Conditioning:
    """SD 1.x/2.x: one CLIP encoder, final hidden states, prompts chunked by 75 tokens."""

    def __init__(self, pairs: list[tuple], index: dict | None = None):
        """`pairs`: (tokenizer, text encoder) per encoder; `index`: model_index.json options."""
        self.pairs = pairs
        self.index = index or {}
        for tok, te in pairs:
            check_text_pair(tok, getattr(te, "module", te).config)  # DDP wraps a trained encoder
        windows = {tok.model_max_length for tok, _ in pairs}
        if len(windows) != 1:
            raise ModelError(f"the model's tokenizers disagree on their window ({sorted(windows)} tokens)")

    def chunk_count(self, texts: list[str], syntax: str = "plain") -> int:
        return max(1, *(len(prompt_chunks(tok, t, syntax)) for tok, _ in self.pairs for t in texts))

    def tokenize_weighted(self, texts: list[str], n_chunks: int | None = None, syntax: str = "plain"):
        """Ids and per-token weights (`prompt_syntax`), one (B, n_chunks, window) tensor each per encoder."""
        n_chunks = n_chunks or self.chunk_count(texts, syntax)
        pairs = [tokenize_weighted(tok, texts, n_chunks, syntax) for tok, _ in self.pairs]
        return [ids for ids, _ in pairs], [w for _, w in pairs]

    def tokenize(self, texts: list[str], n_chunks: int | None = None) -> list[torch.Tensor]:
        return self.tokenize_weighted(texts, n_chunks)[0]

    def check_clip_skip(self, clip_skip) -> int:
        """1 <= clip_skip <= the encoders' layer count (A1111 numbering: 1 = the usual layer)."""
        layers = min(int(te.config.num_hidden_layers) for _, te in self.pairs)
        number = isinstance(clip_skip, (int, float)) and not isinstance(clip_skip, bool)
        if not number or not float(clip_skip).is_integer() or not 1 <= clip_skip <= layers:
            raise UsageError(
                f"clip_skip must be a whole number from 1 (last layer) to {layers} for this model's "
                f"text encoder, got {clip_skip!r}"
            )
        return int(clip_skip)

    def _hidden(self, encoder, out, clip_skip: int) -> torch.Tensor:
        """The last layer's output, or with clip skip N > 1 (A1111 numbering) the N-th layer from
        the end through the final layer norm (A1111, diffusers' `clip_skip=N-1`)."""
        if clip_skip == 1:
            return out.last_hidden_state
        model = getattr(encoder, "text_model", encoder)
        return model.final_layer_norm(out.hidden_states[-clip_skip])

    def _run(self, encoder, ids: torch.Tensor, clip_skip: int = 1):
        """(B, n, w) ids -> hidden (B, n*w, D) and the pooled projection of each first chunk (or None).
        Gradients flow where the caller allows them (training a text encoder)."""
        b, n, w = ids.shape
        device = execution_device(encoder)  # also when wrapped for DDP (no .device there) or offloaded
        out = encoder(ids.reshape(b * n, w).to(device), output_hidden_states=True)
        hidden = self._hidden(encoder, out, clip_skip)
        pooled = getattr(out, "text_embeds", None)
        return hidden.reshape(b, n * w, -1), None if pooled is None else pooled.reshape(b, n, -1)[:, 0]

    def embed(
        self, ids: list[torch.Tensor], weights: list | None = None, clip_skip: int = 1, syntax: str = ""
    ) -> Embeddings:
        """Token ids (one tensor per encoder) and optional per-token weights -> Embeddings; the weights
        act as A1111's emphasis, or for `syntax` "comfy" as ComfyUI's."""
        hiddens, pooled = [], None
        for k, ((tok, encoder), enc_ids) in enumerate(zip(self.pairs, ids)):
            hidden, pooled = self._run(encoder, enc_ids, clip_skip)
            if weights is not None and weights[k] is not None and syntax == "comfy":
                if not bool((weights[k] == 1).all()):  # the empty prompt is encoded only where it is used
                    empty = self._run(encoder, tokenize_weighted(tok, [""], 1)[0], clip_skip)[0]
                    hidden = comfy_token_weights(hidden, weights[k], empty)
            elif weights is not None and weights[k] is not None:
                hidden = apply_token_weights(hidden, weights[k])
            hiddens.append(hidden)
        return self._finish(torch.cat(hiddens, dim=-1), pooled)

    def _finish(self, hidden: torch.Tensor, pooled) -> Embeddings:
        return Embeddings(hidden)

    def with_size(self, emb: Embeddings, height: int, width: int, negative: bool = False) -> Embeddings:
        return emb

    def with_size_ids(self, emb: Embeddings, ids: torch.Tensor) -> Embeddings:
        """Training: each sample's own size ids (B, 6), see `image_input.Placement.size_ids`."""
        return emb

    @torch.no_grad()
    def embed_each(self, texts: list[str], batch: int = 64) -> dict[str, Embeddings]:
        """{text: its own Embeddings, one row 77 x its chunk count tokens long, on the CPU} for each of
        `texts` and the empty text: frozen encoders' captions, encoded once for `training_context`."""
        texts = sorted(set(texts) | {""})
        window = self.pairs[0][0].model_max_length
        out = {}
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            emb = self.embed(self.tokenize(chunk)).to(device="cpu")
            for k, t in enumerate(chunk):
                row = emb[k : k + 1]
                out[t] = Embeddings(row.hidden[:, : window * self.chunk_count([t])], row.added)
        return out

    def training_context(
        self,
        texts: list[str],
        size_ids: torch.Tensor | None = None,
        cached: dict | None = None,
        grad: bool = False,
        device=None,
    ) -> Embeddings:
        """A training batch's conditioning: its captions' `cached` rows (`embed_each`, moved to `device`)
        padded with empty windows, as `tokenize` pads a shorter text, or else the captions encoded now
        (with gradients when `grad`: the text encoder trains); SDXL adds each sample's size ids."""
        if cached is not None:
            emb = _padded([cached[t] for t in texts], cached[""].hidden).to(device=device)
        else:
            with contextlib.nullcontext() if grad else torch.no_grad():
                emb = self.embed(self.tokenize(texts))
        return emb if size_ids is None else self.with_size_ids(emb, size_ids)

    def unused_modules(self) -> list:
        """Encoder parts that never reach the UNet (without clip skip): training leaves them frozen,
        as they get no gradient (and DDP refuses parameters that get none)."""
        return []

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        negatives: list[str] | None,
        height: int,
        width: int,
        syntax: str = "plain",
        clip_skip: int = 1,
    ):
        """Conditional and (given negatives) unconditional embeddings, padded to one chunk count;
        `syntax`: how prompts are read (`prompt_syntax`), `clip_skip`: A1111's."""
        texts = prompts + (negatives or [])
        ids, weights = self.tokenize_weighted(texts, syntax=syntax)
        emb = self.embed(ids, weights, clip_skip, syntax)
        cond = self.with_size(emb[: len(prompts)], height, width)
        if negatives is None:
            return cond, None
        return cond, self.with_size(emb[len(prompts) :], height, width, negative=True)


def text_pairs(components) -> list[tuple]:
    """(tokenizer, text encoder) of each encoder a model has, in order."""
    c = components
    return [
        (tok, te) for tok, te in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)) if te is not None
    ]


def clip_text_config(section: dict, tokenizer) -> dict:
    """CLIPTextConfig arguments: the section's, with the vocabulary and special ids of `tokenizer`."""
    return {
        "max_position_embeddings": tokenizer.model_max_length,
        **section,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
