"""ControlNet on the UNet families: a control network's down- and mid-block residuals as a
`Residuals` of the model call (sampling/model_call.py), computed as diffusers' ControlNet
pipelines compute them (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
Models").

A unit is active on the steps whose fraction of the run lies in [start, end] (diffusers'
`control_guidance_start/end`); on the others it adds nothing and its network does not run.
Modes, as A1111's ControlNet extension names them:
- "balanced": every residual times the weight;
- "prompt" ("My prompt is more important"): residual i of n times weight * 0.825**(12 - i), so
  the shallow blocks get less (A1111's soft injection);
- "control" ("ControlNet is more important"): those scales, and only the conditional half of a
  guided batch gets residuals (A1111's CFG injection);
- "guess" (diffusers' `guess_mode`): the network sees only the conditional half, its residuals
  scaled from 0.1 at the first block to 1 at the mid block (logarithmically).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdiff.errors import UsageError
from latentdiff.sampling.model_call import BlockResiduals, Inputs


def in_range(step: int, total: int, start: float, end: float) -> bool:
    """Whether step `step` of `total` lies in the fractions [start, end] (diffusers' rule)."""
    return not (step / total < start or (step + 1) / total > end)


@dataclass
class ControlNetResiduals:
    """One ControlNet unit for a run of `total` steps. `image` (1 or B, 3, H, W) in [0, 1] at
    the output size, as diffusers' control image processor makes it."""

    net: torch.nn.Module  # diffusers ControlNetModel
    image: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    total: int = 1
    mode: str = "balanced"

    def active(self, step: int) -> bool:
        return in_range(step, self.total, self.start, self.end)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> BlockResiduals | None:
        if not self.active(inputs.step):
            return None
        cond_rows = x.shape[0] // 2 if inputs.guided and self.mode in ("control", "guess") else 0
        seen = cond_rows if self.mode == "guess" else 0  # guess mode runs the network on the conditional half
        down, mid = self._run(x[seen:], t, inputs.context[seen:])
        if cond_rows:  # the unconditional half gets zeros
            down, mid = [_pad(d[cond_rows - seen :], cond_rows) for d in down], _pad(mid[cond_rows - seen :], cond_rows)
        return BlockResiduals(tuple(down), mid)

    def _run(self, x, t, context):
        image = self.image.to(x.device, self.net.dtype)
        if image.shape[0] != x.shape[0]:
            image = image.repeat_interleave(x.shape[0] // image.shape[0], dim=0)
        soft = self.mode in ("prompt", "control")
        down, mid = self.net(
            x.to(self.net.dtype),
            t,
            encoder_hidden_states=context.hidden,
            controlnet_cond=image,
            conditioning_scale=1.0 if soft else self.scale,
            guess_mode=self.mode == "guess",
            added_cond_kwargs=dict(context.added) or None,
            return_dict=False,
        )
        if soft:
            scales = [self.scale * 0.825 ** float(12 - i) for i in range(len(down) + 1)]
            down, mid = [d * s for d, s in zip(down, scales)], mid * scales[len(down)]
        return down, mid


def _pad(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` (the conditional rows) after `rows` rows of zeros for the unconditional half."""
    return torch.cat([torch.zeros((rows, *x.shape[1:]), dtype=x.dtype, device=x.device), x])


@dataclass
class AdapterResiduals:
    """One T2I-Adapter unit (Mou et al. 2023) for a run of `total` steps: its features, computed
    once from the control image (they depend on neither the latents nor the step) and scaled by
    the weight, added inside the down blocks on the steps of [start, end]."""

    features: tuple[torch.Tensor, ...]  # (1, C_i, h_i, w_i) per down block
    start: float = 0.0
    end: float = 1.0
    total: int = 1

    def active(self, step: int) -> bool:
        return in_range(step, self.total, self.start, self.end)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> BlockResiduals | None:
        if not self.active(inputs.step):
            return None
        rows = x.shape[0]
        return BlockResiduals(intrablock=tuple(f.expand(rows, *f.shape[1:]).to(x.dtype) for f in self.features))


def adapter_features(adapter: torch.nn.Module, image: torch.Tensor, weight: float) -> tuple[torch.Tensor, ...]:
    """A T2I-Adapter's features of a control image (1, C, H, W) in [0, 1], times `weight`."""
    with torch.no_grad():
        return tuple(f * weight for f in adapter(image.to(adapter.device, adapter.dtype)))


def intrablock_shapes(config: dict, height: int, width: int) -> list[tuple[int, int, int]]:
    """(channels, h, w) of what a UNet2DConditionModel adds each T2I-Adapter feature to, for latents
    of `height` x `width`: inside a cross-attention down block before its downsampler, after any
    other down block (its downsampler included), as diffusers' UNet pops them."""
    out, types = [], list(config["down_block_types"])
    for i, (kind, channels) in enumerate(zip(types, config["block_out_channels"])):
        final = i == len(types) - 1
        if "CrossAttn" in kind:
            out.append((channels, height, width))
        if not final:
            height, width = -(-height // 2), -(-width // 2)
        if "CrossAttn" not in kind:
            out.append((channels, height, width))
    return out


def check_adapter_fits(features, config: dict, height: int, width: int) -> None:
    """Refuse, in one line, adapter features that this UNet cannot add at these latent sizes."""
    want = intrablock_shapes(config, height, width)
    have = [tuple(f.shape[1:]) for f in features]
    if any(a != b for a, b in zip(have, want)):
        raise UsageError(
            f"this T2I-Adapter's features {have[: len(want)]} (channels, height, width) do not fit this "
            f"model's UNet blocks {want} at {width}x{height} latents: it was made for another architecture"
        )
