"""What the UNet is conditioned on, one small class per model family; `sampling.denoise` is
the one loop for all of them.

- SD 1.x/2.x: one CLIP text encoder; its last hidden states are the cross-attention context.
- SDXL (Podell et al. 2023): two encoders (CLIP ViT-L and OpenCLIP ViT-bigG) whose penultimate
  hidden states are concatenated feature-wise, the second one's pooled projection, and the
  size/crop micro-conditioning (`time_ids`). The refiner has only the second encoder and an
  aesthetic score where the base has the target size.

Prompts become `Embeddings` in two steps, so prompt syntax and weighting can plug in between:
`tokenize` (texts -> one (B, n_chunks, 77) id tensor per encoder) and `embed` (those ids, and
optionally one per-token weight tensor of the same shape per encoder -> Embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .text import chunk_count, tokenize

# diffusers' StableDiffusionXLImg2ImgPipeline defaults for the refiner's aesthetic conditioning.
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


@dataclass
class Embeddings:
    """A batch's conditioning: the context sequence plus any extra UNet inputs."""

    hidden: torch.Tensor  # (B, T, D) cross-attention context
    added: dict = field(default_factory=dict)  # SDXL: text_embeds (B, P), time_ids (B, 5 or 6)

    def cat(self, other: "Embeddings") -> "Embeddings":
        return Embeddings(torch.cat([self.hidden, other.hidden]),
                          {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()})

    def to(self, dtype=None, device=None) -> "Embeddings":
        return Embeddings(self.hidden.to(device=device, dtype=dtype),
                          {k: v.to(device=device, dtype=dtype) for k, v in self.added.items()})

    def __getitem__(self, rows: slice) -> "Embeddings":
        return Embeddings(self.hidden[rows], {k: v[rows] for k, v in self.added.items()})


def as_embeddings(x) -> Embeddings:
    return x if isinstance(x, Embeddings) else Embeddings(x)


def apply_token_weights(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """AUTOMATIC1111's emphasis: scale each token's embedding by its weight, then rescale each
    chunk so its mean is what it was. hidden (B, n*w, D), weights (B, n, w)."""
    b, n, w = weights.shape
    z = hidden.reshape(b, n, w, -1)
    before = z.mean(dim=(2, 3), keepdim=True)
    z = z * weights[..., None].to(z.dtype)
    z = z * (before / z.mean(dim=(2, 3), keepdim=True))
    return z.reshape(hidden.shape)


class Conditioning:
    """SD 1.x/2.x: one CLIP encoder, final hidden states, prompts chunked by 75 tokens."""

    layer: int | None = None  # None: the final (normed) hidden states; -2: the penultimate layer

    def __init__(self, pairs: list[tuple], index: dict | None = None):
        """`pairs`: (tokenizer, text encoder) per encoder; `index`: model_index.json options."""
        self.pairs = pairs
        self.index = index or {}
        windows = {tok.model_max_length for tok, _ in pairs}
        if len(windows) != 1:
            from .errors import ModelError

            raise ModelError(f"the model's tokenizers disagree on their window ({sorted(windows)} tokens)")

    def chunk_count(self, texts: list[str]) -> int:
        return max(chunk_count(tok, texts) for tok, _ in self.pairs)

    def tokenize(self, texts: list[str], n_chunks: int | None = None) -> list[torch.Tensor]:
        n_chunks = n_chunks or self.chunk_count(texts)
        return [tokenize(tok, texts, n_chunks) for tok, _ in self.pairs]

    @torch.no_grad()
    def _run(self, encoder, ids: torch.Tensor):
        """(B, n, w) ids -> hidden (B, n*w, D) and the pooled projection of each first chunk (or None)."""
        b, n, w = ids.shape
        out = encoder(ids.reshape(b * n, w).to(encoder.device), output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        pooled = getattr(out, "text_embeds", None)
        return hidden.reshape(b, n * w, -1), None if pooled is None else pooled.reshape(b, n, -1)[:, 0]

    def embed(self, ids: list[torch.Tensor], weights: list | None = None) -> Embeddings:
        """Token ids (one tensor per encoder) and optional per-token weights -> Embeddings."""
        hiddens, pooled = [], None
        for k, ((_, encoder), enc_ids) in enumerate(zip(self.pairs, ids)):
            hidden, pooled = self._run(encoder, enc_ids)
            if weights is not None and weights[k] is not None:
                hidden = apply_token_weights(hidden, weights[k])
            hiddens.append(hidden)
        return self._finish(torch.cat(hiddens, dim=-1), pooled)

    def _finish(self, hidden: torch.Tensor, pooled) -> Embeddings:
        return Embeddings(hidden)

    def with_size(self, emb: Embeddings, height: int, width: int, negative: bool = False) -> Embeddings:
        return emb

    def __call__(self, prompts: list[str], negatives: list[str] | None, height: int, width: int):
        """Conditional and (given negatives) unconditional embeddings, padded to one chunk count."""
        texts = prompts + (negatives or [])
        emb = self.embed(self.tokenize(texts, self.chunk_count(texts)))
        cond = self.with_size(emb[: len(prompts)], height, width)
        if negatives is None:
            return cond, None
        return cond, self.with_size(emb[len(prompts) :], height, width, negative=True)


class SDXLConditioning(Conditioning):
    """SDXL base (two encoders) or refiner (the second only): penultimate hidden states,
    pooled embeddings of the last encoder, size/crop (or aesthetic) ids."""

    layer = -2

    def _finish(self, hidden: torch.Tensor, pooled) -> Embeddings:
        return Embeddings(hidden, {"text_embeds": pooled})

    def with_size(self, emb: Embeddings, height: int, width: int, negative: bool = False) -> Embeddings:
        # original size, crop top-left, then target size (base) or aesthetic score (refiner)
        if self.index.get("requires_aesthetics_score", False):
            tail = [NEGATIVE_AESTHETIC_SCORE if negative else AESTHETIC_SCORE]
        else:
            tail = [height, width]
        ids = torch.tensor([[height, width, 0, 0, *tail]], dtype=emb.hidden.dtype).repeat(len(emb.hidden), 1)
        return Embeddings(emb.hidden, {**emb.added, "time_ids": ids.to(emb.hidden.device)})

    def __call__(self, prompts, negatives, height, width):
        if negatives is not None and self.index.get("force_zeros_for_empty_prompt", True) and not any(negatives):
            # No negative prompt: SDXL was trained to take zeros as the unconditional input.
            cond, _ = super().__call__(prompts, None, height, width)
            zeros = Embeddings(torch.zeros_like(cond.hidden), {"text_embeds": torch.zeros_like(cond.added["text_embeds"])})
            return cond, self.with_size(zeros, height, width, negative=True)
        return super().__call__(prompts, negatives, height, width)


def conditioning_for(components) -> Conditioning:
    """The conditioning of a loaded model's family."""
    c = components
    pairs = [(tok, te) for tok, te in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)) if te is not None]
    cls = SDXLConditioning if c.is_sdxl else Conditioning
    return cls(pairs, c.index)
