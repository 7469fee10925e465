"""What the UNet families (SD 1/2, SDXL, the x4 upscaler) share: diffusers' UNet2DConditionModel
called through the model-call contract, and CLIP text conditioning."""

from __future__ import annotations

import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import Family, diffusers_pipeline
from latentdiff.families.clip import Conditioning, text_pairs
from latentdiff.sampling.model_call import Inputs


class UNetCall:
    """A UNet2DConditionModel as a Denoiser: Inputs -> its keyword arguments. The context is
    families.clip.Embeddings (hidden states; SDXL's pooled text and size ids as
    added_cond_kwargs); image channels are concatenated to the latents and their class labels
    passed as `class_labels`; Residuals become down_block_additional_residuals /
    mid_block_additional_residual (ControlNet) and down_intrablock_additional_residuals (T2I-Adapter); image tokens go in as added_cond_kwargs["image_embeds"], as
    diffusers' IP-Adapter pipelines pass them."""

    def __init__(self, unet):
        self.unet = unet
        self.dtype = unet.dtype  # diffusers walks every submodule for this: read once per run

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        return self.unet(self.sample(x, inputs), t, **self.kwargs(x, t, inputs)).sample

    @staticmethod
    def sample(x: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        ch = inputs.channels
        return x if ch is None else torch.cat([x, ch.concat], dim=1)

    @staticmethod
    def kwargs(x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> dict:
        ctx, ch = inputs.context, inputs.channels
        added = dict(ctx.added)
        labels = added.pop("class_labels", None)  # Stable unCLIP's noised image embedding (families/unclip.py)
        if inputs.tokens:
            added["image_embeds"] = [tokens.embeds for tokens in inputs.tokens]
        out = {"encoder_hidden_states": ctx.hidden, "added_cond_kwargs": added or None}
        if ch is not None and ch.class_labels is not None:
            out["class_labels"] = ch.class_labels
        elif labels is not None:
            out["class_labels"] = labels
        residuals = inputs.block_residuals(x, t)
        if residuals is not None and residuals.down:
            out["down_block_additional_residuals"] = residuals.down
            out["mid_block_additional_residual"] = residuals.mid
        if residuals is not None and residuals.intrablock:
            out["down_intrablock_additional_residuals"] = list(residuals.intrablock)  # the UNet pops from it
        return out


class UNetFamily(Family):
    """A family whose network is a UNet2DConditionModel conditioned on CLIP text."""

    conditioning_class = Conditioning

    def conditioning(self, components):
        return self.conditioning_class(text_pairs(components), components.index)

    def denoiser(self, components, guidance: float | None = None):
        return UNetCall(components.unet)

    def lora_host(self, components, scheduler):
        none = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return diffusers_pipeline("StableDiffusionPipeline", components, scheduler, **none)

    def inpainting(self, components) -> bool:
        return components.unet.config.in_channels == 2 * components.vae.config.latent_channels + 1

    def check_start(self, components) -> None:
        channels, latent = components.unet.config.in_channels, components.vae.config.latent_channels
        if channels not in (latent, 2 * latent + 1):
            raise UsageError(
                f"this model's UNet takes {channels} input channels: not a text-to-image "
                "or inpainting model (an upscaler? use `latentdiff upscale` or --upscaler)"
            )
