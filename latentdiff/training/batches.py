"""Turn dataset indices into (latents, text context) for a training step.

With caching (the default), the frozen VAE encodes every image once in a pre-pass (both
orientations when flipping) and each step only samples from the stored posteriors; frozen
text embeddings are cached per caption too. Without it, every step re-encodes its images
through the VAE, as diffusers' train_text_to_image.py does (needed for random crops).

Captions are encoded as generation encodes prompts, by the model's own `Conditioning` (SDXL: both
encoders' penultimate layers and the pooled embedding): one 77-token window per 75 tokens,
concatenated, so a long caption is never cut; a batch pads shorter captions with empty windows,
exactly what generation does for a prompt beside a longer negative prompt. SDXL is also told each
sample's original size, crop corner and target size (`size_ids`), as its training recipe does.

With `alternatives` (finetune --alt-captions), each sample's caption is drawn among its own and its
metadata alt_texts. The batch's random draws (latent sample, flip, caption dropout and choice) come from the step's generator
(objective.step_generator), so a resumed run draws them again exactly.
"""

from __future__ import annotations

import sys

import torch

from latentdiff.families.clip import Embeddings
from latentdiff.families.registry import family_of


class BatchSource:
    def __init__(
        self,
        components,
        dataset,
        captions: list[str],
        *,
        cache: bool,
        flip: bool,
        train_text: bool,
        caption_dropout: float,
        device,
        dtype,
        progress: bool = True,
        alternatives: list[tuple[str, ...]] | None = None,
    ):
        """`captions[i]`: the caption of the dataset's image i; `alternatives[i]`: its other captions."""
        self.c, self.dataset, self.captions = components, dataset, captions
        self.options = caption_options(captions, alternatives)
        self.flip, self.train_text, self.p_drop = flip, train_text, caption_dropout
        self.device, self.dtype = device, dtype
        self.scale = components.vae.config.scaling_factor
        self.shift = components.vae.config.get("shift_factor") or 0.0  # Flux's and SD3's VAEs centre their latents
        self.conditioning = family_of(components).conditioning(components)
        self.posteriors = self._encode_all(progress) if cache else None
        every = [t for opts in self.options for t in opts] if self.options else captions
        self.embeddings = self.conditioning.embed_each(every) if cache and not train_text else None

    def use_encoders(self, modules: dict) -> None:
        """Encode with the accelerate-wrapped encoders the loop trains, so DDP syncs their gradients."""
        from dataclasses import replace

        wrapped = {name: modules[name] for name in ("text_encoder", "text_encoder_2") if name in modules}
        wrapped_c = replace(self.c, **wrapped)
        self.conditioning = family_of(wrapped_c).conditioning(wrapped_c)

    # ---- pre-pass -----------------------------------------------------------------------
    @torch.no_grad()
    def _posterior(self, pixels: torch.Tensor):
        dist = self.c.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return dist.mean.float().cpu(), dist.std.float().cpu()

    def _views(self, pixels: torch.Tensor) -> list:
        """The posteriors (mean, std) of a pre-pass batch (b, 3, H, W) and, when flipping, of its mirror image."""
        return [self._posterior(pixels)] + ([self._posterior(pixels.flip(-1))] if self.flip else [])

    def _encode_all(self, progress: bool) -> list:
        """Per image: [(mean, std, size_ids)] or, when flipping, the same for its mirror image too."""
        from tqdm.auto import tqdm

        out = []
        # The bar moves once a batch: 32 images a batch at 512 px sat at "caching latents 0/20" for minutes
        # on a 2-core CPU. A CPU encodes a batch in the time of its images one by one, so it takes them
        # singly; a GPU keeps a few together to stay busy.
        batch = 1 if self.device.type == "cpu" else 8
        with tqdm(total=len(self.captions), desc="caching latents", file=sys.stderr, disable=not progress) as bar:
            for pixels, ids in self.dataset.unaugmented(batch):
                views = self._views(pixels)
                out += [[(m[j], s[j], i) for (m, s), i in zip(views, ids[j])] for j in range(len(ids))]
                bar.update(len(ids))
        return out

    # ---- per step -----------------------------------------------------------------------
    def latents(self, indices: list[int], gen: torch.Generator, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, 4, h, w) and each sample's size ids (B, 6) for SDXL's micro-conditioning.
        `self.picked` keeps what they came from: the pixels, or (image, mirrored) pairs when cached
        (`self.items`: the dataset's items, when not cached)."""
        if self.posteriors is not None:
            views = torch.randint(0, 2, (len(indices),), generator=gen) if self.flip else [0] * len(indices)
            self.picked = [(i, int(v)) for i, v in zip(indices, views)]  # (image, mirrored?)
            mean, std, ids = (torch.stack(parts) for parts in zip(*(self.posteriors[i][v] for i, v in self.picked)))
        else:
            self.dataset.set_epoch(epoch)
            self.items = items = [self.dataset[i] for i in indices]
            self.picked = torch.stack([item["pixel_values"] for item in items])  # (B, 3, H, W)
            mean, std = self._posterior(self.picked)
            ids = torch.stack([item["size_ids"] for item in items])
        return sample_latents(mean - self.shift, std, gen, self.scale).to(self.device), ids

    def context(self, indices: list[int], gen: torch.Generator, size_ids: torch.Tensor | None = None) -> Embeddings:
        """The captions' conditioning (B, n_chunks * 77, D), as generation encodes prompts (never cut;
        SDXL adds the pooled embedding and `size_ids`), each caption dropped with probability p_drop."""
        self.dropped = drop = dropout_mask(len(indices), self.p_drop, gen)  # (B,) kept for the image embedding
        texts = pick_captions(self.captions, self.options, indices, drop, gen)
        return self.conditioning.training_context(
            texts, size_ids, self.embeddings, grad=self.train_text, device=self.device
        )

    def image_cond(self, indices: list[int], gen: torch.Generator):
        """Image conditioning beside the latents (training/upscaler.py has one); none here."""
        return None

    def residuals(self) -> tuple:
        """The model call's `Residuals` for the last latents() batch (training/controlnet.py has one); none here."""
        return ()


def sample_latents(mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Draw z ~ N(mean, std) from cached VAE posteriors (the mean shifted by the VAE's shift_factor),
    scaled to unit variance. (B, C, h, w)"""
    eps = torch.randn(mean.shape, generator=gen).to(mean.device)
    return (mean + std * eps) * scale


def dropout_mask(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """True where the caption is replaced by the empty prompt."""
    return torch.rand(n, generator=gen) < p


def caption_options(captions: list[str], alternatives: list[tuple[str, ...]] | None) -> list[tuple] | None:
    """Per image, its caption and its alternatives (None without alternatives: each image's own caption)."""
    return [(c, *alts) for c, alts in zip(captions, alternatives)] if alternatives is not None else None


def pick_captions(captions: list[str], options: list[tuple] | None, indices, drop, gen) -> list[str]:
    """Each sample's caption: "" where dropped, else its own or, with `options`, one of them drawn
    uniformly from the step's generator (drawn for every sample, so the draws never depend on drops)."""
    if options is None:
        return ["" if d else captions[i] for i, d in zip(indices, drop)]
    r = torch.randint(0, 2**31 - 1, (len(indices),), generator=gen).tolist()
    return ["" if d else options[i][k % len(options[i])] for i, d, k in zip(indices, drop, r)]


def every_caption(records: list, alts: bool) -> list[str]:
    """The captions a run can train on: each record's, and its alt_texts when they are drawn."""
    return [t for r in records for t in (r.caption, *(r.alt_captions if alts else ()))]
