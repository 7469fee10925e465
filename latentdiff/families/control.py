"""ControlNet on the UNet families: a control network's down- and mid-block residuals as a
`Residuals` of the model call (sampling/model_call.py), computed as diffusers' ControlNet
pipelines compute them (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
Models").

A unit is active on the steps whose fraction of the run lies in [start, end] (diffusers'
`control_guidance_start/end`); on the others it adds nothing and its network does not run. In
guess mode ("ControlNet is more important" in A1111) it sees only the conditional half of a
guided batch and the unconditional half gets no residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdiff.sampling.model_call import BlockResiduals, Inputs


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
    guess: bool = False

    def active(self, step: int) -> bool:
        return not (step / self.total < self.start or (step + 1) / self.total > self.end)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> BlockResiduals | None:
        if not self.active(inputs.step):
            return None
        guided_rows = x.shape[0] // 2 if self.guess and inputs.guided else 0
        context = inputs.context[guided_rows:]
        x = x[guided_rows:]
        image = self.image.to(x.device, self.net.dtype)
        image = image.repeat_interleave(x.shape[0] // image.shape[0], dim=0) if image.shape[0] != x.shape[0] else image
        down, mid = self.net(
            x.to(self.net.dtype),
            t,
            encoder_hidden_states=context.hidden,
            controlnet_cond=image,
            conditioning_scale=self.scale,
            guess_mode=self.guess,
            added_cond_kwargs=dict(context.added) or None,
            return_dict=False,
        )
        if guided_rows:
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return BlockResiduals(tuple(down), mid)
