"""The model call contract: what the sampling loop hands a denoiser each step, and nothing more.

The loop calls `model(x, t, inputs) -> prediction`. `x` (B, C, h, w) are the scheduler-scaled
latents (under classifier-free guidance the unconditional rows first), `t` the timestep, and
`inputs` an `Inputs`: the family's own conditioning (`context`) plus the named additions a
workflow may bring. A family's denoiser (families/) maps them to its network's arguments; the
loop knows no family, no UNet keyword and no control:

- `ImageChannels`: image channels concatenated to the latents (an inpainting UNet's mask and
  masked-image latents, the x4 upscaler's noised low-res image) and class labels (its noise level);
- `Residuals`: callables adding to the down and mid blocks (ControlNet, T2I-Adapter), summed;
- `ImageTokens`: extra attention inputs (IP-Adapter image embeddings);
- `StepContexts`: a context chosen per step (prompt editing, alternation).

Wrappers around a denoiser (tiling) live in sampling/wrappers.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol

import torch

from latentdiff.errors import UsageError


class Denoiser(Protocol):
    """A network the loop can call. `dtype`: the precision it computes in (the loop casts
    latents and inputs to it once); the prediction comes back (B, C, h, w) like `x`."""

    dtype: torch.dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: "Inputs") -> torch.Tensor: ...


def _twice(x):
    return None if x is None else torch.cat([x, x])


def _cast(x, dtype):
    return None if x is None or not x.is_floating_point() else x.to(dtype)


@dataclass
class ImageChannels:
    """Image conditioning concatenated to the latent channels after scaling, and class labels."""

    concat: torch.Tensor  # (B, C', h, w)
    class_labels: torch.Tensor | None = None  # (B,)

    def cat(self, other: "ImageChannels") -> "ImageChannels":
        labels = None if self.class_labels is None else torch.cat([self.class_labels, other.class_labels])
        return ImageChannels(torch.cat([self.concat, other.concat]), labels)

    def to(self, dtype) -> "ImageChannels":
        return ImageChannels(self.concat.to(dtype), self.class_labels)  # labels are indices: never cast


@dataclass
class BlockResiduals:
    """Additions to a UNet's down-block outputs (one per skip connection: ControlNet) and its mid
    block, and inside its down blocks (one per block: T2I-Adapter)."""

    down: tuple[torch.Tensor, ...] = ()
    mid: torch.Tensor | None = None
    intrablock: tuple[torch.Tensor, ...] = ()

    def __add__(self, other: "BlockResiduals") -> "BlockResiduals":
        mid = self.mid if other.mid is None else other.mid if self.mid is None else self.mid + other.mid
        return BlockResiduals(_sum(self.down, other.down), mid, _sum(self.intrablock, other.intrablock))


def _sum(a: tuple, b: tuple) -> tuple:
    return b if not a else a if not b else tuple(x + y for x, y in zip(a, b, strict=True))


# (x, t, inputs) -> BlockResiduals, or None on a step where it adds nothing: a ControlNet or
# T2I-Adapter, given the latents before any image channels are concatenated, the timestep and the
# whole batch's inputs (their `step`, and whether the batch is `guided`).
Residuals = Callable[[torch.Tensor, torch.Tensor, "Inputs"], "BlockResiduals | None"]


@dataclass
class ImageTokens:
    """Image embeddings an adapter (IP-Adapter) attends to beside the text."""

    embeds: torch.Tensor  # (B, N, D)

    def cat(self, other: "ImageTokens") -> "ImageTokens":
        return ImageTokens(torch.cat([self.embeds, other.embeds]))

    def to(self, dtype) -> "ImageTokens":
        return ImageTokens(self.embeds.to(dtype))


@dataclass
class StepContexts:
    """A context per step: `contexts[k]` from step `starts[k]` on (starts[0] == 0), e.g. A1111's
    `[from:to:when]` prompt editing. Combines with a plain context or another schedule by `cat`."""

    contexts: tuple
    starts: tuple[int, ...]

    def __post_init__(self):
        if not self.starts or self.starts[0] != 0 or list(self.starts) != sorted(set(self.starts)):
            raise ValueError(f"StepContexts starts must rise from 0, got {self.starts}")
        if len(self.contexts) != len(self.starts):
            raise ValueError("StepContexts needs one context per start")

    def at(self, step: int):
        k = max(i for i, s in enumerate(self.starts) if s <= step)
        return self.contexts[k]

    def cat(self, other) -> "StepContexts":
        starts = tuple(sorted(set(self.starts) | set(getattr(other, "starts", (0,)))))
        return StepContexts(tuple(self.at(s).cat(context_at(other, s)) for s in starts), starts)

    def rcat(self, first) -> "StepContexts":
        """`first` (a plain context) before each of this schedule's contexts."""
        return StepContexts(tuple(first.cat(c) for c in self.contexts), self.starts)

    def to(self, dtype) -> "StepContexts":
        return StepContexts(tuple(c.to(dtype) for c in self.contexts), self.starts)

    def __getitem__(self, rows) -> "StepContexts":
        """These rows of every step's context (one image of a batch)."""
        return StepContexts(tuple(c[rows] for c in self.contexts), self.starts)


@dataclass
class Composed:
    """Several conditional rows per image with weights: A1111's `AND` (composable diffusion, Liu
    et al. 2022). `context` holds every sub-prompt's row; image i's prediction is
    eps_u_i + g * sum_j w_j (eps(row_j) - eps_u_i) over its `rows[i]` = ((row, weight), ...).
    Only a carrier: `Inputs` takes the rows out as its `mix`."""

    context: Any
    rows: tuple

    def __getitem__(self, images: slice) -> "Composed":
        """These images' rows (renumbered)."""
        picked = self.rows[images]
        flat = [r for pairs in picked for r, _ in pairs]
        renumber = {r: k for k, r in enumerate(flat)}
        return Composed(self.context[torch.tensor(flat)], tuple(tuple((renumber[r], w) for r, w in p) for p in picked))


def context_at(context, step: int):
    """The context of step `step`: a schedule's entry, or a plain context itself."""
    return context.at(step) if isinstance(context, StepContexts) else context


def _cat_contexts(first, second):
    if isinstance(second, StepContexts) and not isinstance(first, StepContexts):
        return second.rcat(first)
    return first.cat(second)


@dataclass
class Inputs:
    """Everything a denoiser is conditioned on for one batch."""

    context: Any  # the family's conditioning (UNet families: families.clip.Embeddings), or StepContexts
    channels: ImageChannels | None = None
    residuals: tuple[Residuals, ...] = ()
    tokens: tuple[ImageTokens, ...] = ()
    step: int = 0  # the loop's step (from 0 in this run), for additions active on some steps only
    guided: bool = False  # the rows are a guided batch: the unconditional half, then the conditional
    mix: tuple | None = None  # the conditional rows' images and weights (`Composed`); None: one row per image

    def __post_init__(self):
        if isinstance(self.context, Composed):
            self.context, self.mix = self.context.context, self.context.rows

    def cat(self, other: "Inputs") -> "Inputs":
        """This batch's rows, then `other`'s (CFG: unconditional first). Residual callables are
        shared: they see the doubled batch."""
        channels = None if self.channels is None else self.channels.cat(other.channels)
        tokens = tuple(a.cat(b) for a, b in zip(self.tokens, other.tokens, strict=True))
        if other.mix is not None and (channels is not None or tokens or self.residuals):
            raise UsageError("AND in a prompt works without controls, image prompts and inpainting models")
        return Inputs(_cat_contexts(self.context, other.context), channels, self.residuals, tokens, mix=other.mix)

    def rows(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents of each row the denoiser sees: (unconditional rows first, when guided) then
        one per conditional row."""
        cond = latents if self.mix is None else latents[torch.tensor(_images(self.mix))]
        return torch.cat([latents, cond]) if self.guided else cond

    def guide(self, eps: torch.Tensor, guidance: float, rescale: Callable | None = None, t=None) -> torch.Tensor:
        """Classifier-free guidance over the rows' predictions: eps_u + g (eps_c - eps_u), or with a
        mix eps_u + g sum_j w_j (eps_j - eps_u) (A1111's `combine_denoised`; unguided, an image's
        first row stands in for eps_u, as A1111 does where it skips the unconditional half).
        `rescale(guided, eps_c, t)`: the model's own correction of a guided prediction at timestep `t`
        (Qwen-Image's norm rescaling, Z-Image's normalisation and truncation), on the plain guided batch."""
        if self.mix is None:
            if not self.guided:
                return eps
            eps_u, eps_c = eps.chunk(2)
            guided = eps_u + guidance * (eps_c - eps_u)
            return guided if rescale is None else rescale(guided, eps_c, t)
        n = len(self.mix)
        eps_c = eps[n:] if self.guided else eps
        eps_u = eps[:n] if self.guided else eps_c[torch.tensor([pairs[0][0] for pairs in self.mix])]
        out = eps_u.clone()
        for i, pairs in enumerate(self.mix):
            for row, weight in pairs:
                out[i] += (eps_c[row] - eps_u[i]) * (weight * guidance)
        return out

    def to(self, dtype) -> "Inputs":
        channels = None if self.channels is None else self.channels.to(dtype)
        return replace(
            self, context=self.context.to(dtype), channels=channels, tokens=tuple(t.to(dtype) for t in self.tokens)
        )

    def at(self, step: int) -> "Inputs":
        """These inputs at step `step`: its context where the context is a schedule."""
        return replace(self, context=context_at(self.context, step), step=step)

    def block_residuals(self, x: torch.Tensor, t: torch.Tensor) -> BlockResiduals | None:
        """The sum of every `Residuals`' output for this step, or None without any."""
        out = None
        for residuals in self.residuals:
            r = residuals(x, t, self)
            if r is not None:
                out = r if out is None else out + r
        return out


def _images(mix: tuple) -> list[int]:
    return [i for i, pairs in enumerate(mix) for _ in pairs]


def as_inputs(x) -> Inputs:
    """`x` itself if it is Inputs, else Inputs around a plain context."""
    return x if isinstance(x, Inputs) else Inputs(x)


def guided(cond, uncond) -> Inputs:
    """The batch the denoiser sees: `uncond`'s rows then `cond`'s under CFG, `cond` alone without."""
    cond = as_inputs(cond)
    return cond if uncond is None else replace(as_inputs(uncond).cat(cond), guided=True)


__all__ = [
    "BlockResiduals",
    "Composed",
    "Denoiser",
    "ImageChannels",
    "ImageTokens",
    "Inputs",
    "Residuals",
    "StepContexts",
    "as_inputs",
    "context_at",
    "guided",
]
