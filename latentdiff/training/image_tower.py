"""The CLIP image tower the unCLIP trainers encode pictures with (training/prior.py, unclip_decoder.py):
any CLIPVisionModelWithProjection folder, with its processor, and the statistics of its embeddings."""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import UsageError
from latentdiff.models.assemble import load_image_encoder
from latentdiff.models.unclip_parts import image_processor


def encoder_folder(folder: Path, method: str) -> Path:
    if not (folder / "config.json").is_file():
        raise UsageError(
            f"--method {method} needs a CLIP image encoder: {folder} is not a CLIPVisionModelWithProjection folder "
            "(config.json and weights); give one with --image-encoder DIR"
        )
    return folder


def image_tower(folder: Path, allow_pickle: bool, processors: tuple = ()):
    """(CLIPVisionModelWithProjection, its CLIPImageProcessor) of `folder`: the processor beside it,
    else in the first of `processors` that holds one, else CLIP's at the encoder's input size."""
    from transformers import CLIPImageProcessor

    encoder = load_image_encoder(folder, allow_pickle)
    for where in (folder, *processors):
        if (where / "preprocessor_config.json").is_file():
            return encoder, image_processor(where)
    side = int(encoder.config.image_size)
    return encoder, CLIPImageProcessor(size=side, crop_size=side)


def spread(embeds: torch.Tensor) -> torch.Tensor:
    """(1, D) the per-dimension standard deviation of (N, D) embeddings: 1 where N is 1, never 0."""
    std = embeds.std(0, keepdim=True) if len(embeds) > 1 else torch.ones_like(embeds[:1])
    return std.clamp(min=1e-6)
