"""`finetune --method controlnet`: a ControlNet (Zhang et al. 2023) trained beside a frozen base model,
on finetune's one loop, objective and checkpoints; only the trained set differs (state.make_trainable).

As diffusers' examples/controlnet/train_controlnet.py does: the network starts as a copy of the base
UNet's encoder half (`ControlNetModel.from_unet`, zero convolutions at its outputs, so step 0 leaves
the base model's predictions unchanged); the UNet, VAE and text encoder stay frozen; each sample's
conditioning image (3 channels in [0, 1], cut as its target: training/data/dataset.py) goes through the
ControlNet, whose residuals are added to the UNet's blocks; the loss is finetune's (eps or v per the
scheduler config). The residuals reach the UNet through the model call's `Residuals`
(families/control.ControlNetResiduals, as generation adds them), so there is one UNet-call path.
The result is a diffusers ControlNet folder (config.json + diffusion_pytorch_model.safetensors).
"""

from __future__ import annotations

import math

import torch

from latentdiff.errors import UsageError
from latentdiff.families.control import ControlNetResiduals
from latentdiff.families.registry import family_of
from latentdiff.models.components import vae_scale_factor
from latentdiff.training.batches import BatchSource

# diffusers' conditioning embedding: one stride-2 convolution between each pair, 3 of them for SD's 8x VAE
EMBEDDING_CHANNELS = (16, 32, 96, 256)


def make_controlnet(components, seed: int) -> torch.nn.Module:
    """A ControlNet for `components`' UNet, initialised from it; its conditioning embedding's random
    layers are drawn from `seed`, so a run (and its resume or export) starts the same way."""
    from diffusers import ControlNetModel

    check_base(components)
    factor = vae_scale_factor(components.vae)
    levels = int(math.log2(factor)) + 1  # the embedding brings the image down to the latents' size
    channels = EMBEDDING_CHANNELS[:levels] if levels <= len(EMBEDDING_CHANNELS) else None
    if channels is None or 2 ** (levels - 1) != factor:
        raise UsageError(f"--method controlnet: this model's VAE scales by {factor}; a ControlNet needs 2, 4 or 8")
    torch.manual_seed(seed)
    return ControlNetModel.from_unet(components.unet, conditioning_embedding_out_channels=channels)


def check_base(components) -> None:
    """A ControlNet steers a text-to-image UNet whose input is the latents alone."""
    unet, latent = components.unet.config, components.vae.config.latent_channels
    if family_of(components).upscales or unet.in_channels != latent:
        raise UsageError(
            f"--method controlnet trains a ControlNet for a text-to-image model; this UNet takes {unet.in_channels} "
            f"input channels (an upscaler or inpainting model), not the latents' {latent}"
        )


class _Trained:
    """The accelerate-prepared ControlNet as ControlNetResiduals calls it: with the dtype it reads (its
    fp32 weights'; a DDP wrapper has no dtype, and its forward is what syncs the gradients), its
    residuals in the frozen UNet's compute dtype (accelerate hands a prepared model's outputs back in
    fp32 under mixed precision; diffusers' script casts them as well)."""

    dtype = torch.float32  # trained weights stay fp32 (state.make_trainable); autocast computes

    def __init__(self, module, compute: torch.dtype):
        self.module, self.compute = module, compute

    def __call__(self, *args, **kwargs):
        down, mid = self.module(*args, **kwargs)
        return [d.to(self.compute) for d in down], mid.to(self.compute)


class ControlSource(BatchSource):
    """BatchSource + each sample's conditioning image, cut as its latents' pixels were (crop and flip):
    cached latents were made from the centre cut (mirrored when the step drew it), otherwise the
    dataset's item carries its map."""

    net: _Trained | None = None
    cond: torch.Tensor | None = None  # (B, 3, H, W) in [0, 1]: the last latents() batch's maps

    def use_encoders(self, modules: dict) -> None:
        super().use_encoders(modules)
        self.net = _Trained(modules["controlnet"], self.dtype)

    def latents(self, indices: list[int], gen: torch.Generator, epoch: int):
        out = super().latents(indices, gen, epoch)
        if self.posteriors is not None:
            maps = [self.dataset.conditioning(i, bool(mirrored)) for i, mirrored in self.picked]
        else:
            maps = [item["conditioning_values"] for item in self.items]
        self.cond = torch.stack(maps).to(self.device)
        return out

    def residuals(self) -> tuple:
        """The ControlNet on the last batch's maps, at weight 1 on every step (diffusers' training call)."""
        return (ControlNetResiduals(self.net, self.cond),)


def validation_control(image, module, dtype: torch.dtype):
    """The validation images' unit: `image` (the first row's conditioning image) through the ControlNet.
    Under mixed precision (the frozen UNet in `dtype`) it is a plain copy in that dtype: the pipeline
    would cast the trained fp32 weights in place, and accelerate's wrapped forward hands back fp32."""
    # latentdiff.Control is the public API's unit (what a user passes to Pipeline), not workflows' internals.
    from latentdiff import Control

    if module.dtype != dtype:
        copy = type(module).from_config(module.config).to(module.device)
        copy.load_state_dict(module.state_dict())
        module = copy.to(dtype).eval()
    return Control(image, module)
