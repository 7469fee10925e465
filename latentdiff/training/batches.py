"""Turn dataset indices into (latents, text context) for a training step.

With caching (the default), the frozen VAE encodes every image once in a pre-pass (both
orientations when flipping) and each step only samples from the stored posteriors; frozen
text embeddings are cached per caption too. Without it, every step re-encodes its images
through the VAE, as diffusers' train_text_to_image.py does (needed for random crops).

Captions are encoded as generation encodes prompts (text.py): one 77-token window per 75 tokens,
concatenated, so a long caption is never cut; a batch pads shorter captions with empty windows,
exactly what generation does for a prompt beside a longer negative prompt.

The batch's random draws (latent sample, flip, caption dropout) come from the step's generator
(objective.step_generator), so a resumed run draws them again exactly.
"""

from __future__ import annotations

import sys

import torch

from ..text import chunk_count, tokenize


class BatchSource:
    def __init__(self, components, dataset, captions: list[str], *, cache: bool, flip: bool,
                 train_text: bool, caption_dropout: float, device, dtype, progress: bool = True):
        self.c, self.dataset, self.captions = components, dataset, captions
        self.flip, self.train_text, self.p_drop = flip, train_text, caption_dropout
        self.device, self.dtype = device, dtype
        self.scale = components.vae.config.scaling_factor
        # The loop swaps in the accelerate-wrapped encoder when it trains, so DDP syncs its gradients.
        self.text_encoder = components.text_encoder
        self.posteriors = self._encode_all(progress) if cache else None
        self.embeddings = self._embed_all() if cache and not train_text else None

    # ---- pre-pass -----------------------------------------------------------------------
    @torch.no_grad()
    def _posterior(self, pixels: torch.Tensor):
        dist = self.c.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return dist.mean.float().cpu(), dist.std.float().cpu()

    def _encode_all(self, progress: bool, batch: int = 32) -> list:
        """Per image: [(mean, std)] or, when flipping, [(mean, std), (mean_flipped, std_flipped)].
        Images are encoded in batches; images of different sizes (buckets) go one by one."""
        from tqdm.auto import tqdm

        out = []
        n = len(self.dataset)
        step = batch if self.dataset.buckets is None else 1
        with tqdm(total=n, desc="caching latents", file=sys.stderr, disable=not progress) as bar:
            for start in range(0, n, step):
                px = torch.stack([self.dataset.load(i) for i in range(start, min(n, start + step))])  # (b, 3, H, W)
                views = [self._posterior(px)] + ([self._posterior(px.flip(-1))] if self.flip else [])
                for j in range(px.shape[0]):
                    out.append([(m[j], s[j]) for m, s in views])
                bar.update(px.shape[0])
        return out

    @torch.no_grad()
    def _embed_all(self) -> dict[str, torch.Tensor]:
        """{caption: (77 * its chunk count, D)}, each caption at its own length."""
        texts = sorted(set(self.captions) | {""})
        window = self.c.tokenizer.model_max_length
        emb = {}
        for i in range(0, len(texts), 64):
            chunk = texts[i : i + 64]
            for t, e in zip(chunk, self._encode_text(chunk)):
                emb[t] = e[: window * chunk_count(self.c.tokenizer, [t])].cpu()
        return emb

    # ---- per step -----------------------------------------------------------------------
    def latents(self, indices: list[int], gen: torch.Generator, epoch: int) -> torch.Tensor:
        if self.posteriors is not None:
            views = torch.randint(0, 2, (len(indices),), generator=gen) if self.flip else [0] * len(indices)
            pairs = [self.posteriors[i][int(v)] for i, v in zip(indices, views)]
            mean = torch.stack([m for m, _ in pairs])
            std = torch.stack([s for _, s in pairs])
        else:
            self.dataset.set_epoch(epoch)
            pixels = torch.stack([self.dataset[i]["pixel_values"] for i in indices])
            mean, std = self._posterior(pixels)
        return sample_latents(mean, std, gen, self.scale).to(self.device)  # (B, 4, h, w)

    def context(self, indices: list[int], gen: torch.Generator) -> torch.Tensor:
        drop = dropout_mask(len(indices), self.p_drop, gen)
        texts = ["" if d else self.captions[i] for i, d in zip(indices, drop)]
        if self.embeddings is not None:
            return self._padded([self.embeddings[t] for t in texts]).to(self.device)
        if self.train_text:
            return self._encode_text(texts)
        with torch.no_grad():
            return self._encode_text(texts)

    def image_cond(self, indices: list[int], gen: torch.Generator):
        """Image conditioning beside the latents (training/upscaler.py has one); none here."""
        return None

    def _padded(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        """Stack cached embeddings, padding with the empty window (what tokenize pads with)."""
        longest = max(e.shape[0] for e in embeddings)
        empty = self.embeddings[""]
        return torch.stack([torch.cat([e, *[empty] * ((longest - e.shape[0]) // empty.shape[0])]) for e in embeddings])

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        ids = tokenize(self.c.tokenizer, texts)  # (B, n_chunks, 77): as generation does, never cut
        b, n, w = ids.shape
        hidden = self.text_encoder(ids.reshape(b * n, w).to(self.device))[0]  # (B * n, 77, D)
        return hidden.reshape(b, n * w, hidden.shape[-1])


def sample_latents(mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Draw z ~ N(mean, std) from cached VAE posteriors, scaled to unit variance. (B, 4, h, w)"""
    eps = torch.randn(mean.shape, generator=gen).to(mean.device)
    return (mean + std * eps) * scale


def dropout_mask(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """True where the caption is replaced by the empty prompt."""
    return torch.rand(n, generator=gen) < p
