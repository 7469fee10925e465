"""Training a Stable unCLIP decoder (DALL-E 2's decoder on a latent UNet; families/unclip.py) on
finetune's loop: `--method unclip` turns an SD 1.x/2.x model and a CLIP image encoder (--image-encoder)
into one, and any method fine-tunes an existing unCLIP model.

The conversion follows the Stable unCLIP layout: the UNet gets a projection class embedding of twice
the image embedding's width (its other weights are the SD model's; the embedding's last layer starts
at zero, so step 0 draws what the SD model draws), an image normaliser, the squared-cosine
image-noising scheduler and the image encoder with its processor. Each sample's CLIP image embedding
(encoded once beside its latents, both orientations with --flip) is normalised, noised to a random
level in [0, the noising scheduler's last step], un-normalised and given with the level's sinusoidal
embedding as the UNet's class label, as generation gives it; a sample whose caption is dropped gets
the zero label of generation's unconditional rows. A new normaliser (mean 0, std 1) takes the
dataset's embedding statistics. Every draw comes from the step generator, so resume is exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import UsageError
from latentdiff.families.registry import family_of
from latentdiff.families.unclip import (
    embedding_width,
    encode_pictures,
    max_noise_level,
    noised_labels,
    place_unclip,
    with_labels,
)
from latentdiff.images.write import to_pil
from latentdiff.training.batches import BatchSource
from latentdiff.training.image_tower import encoder_folder, image_tower, spread

# Stable unCLIP's image_noising_scheduler (stabilityai/stable-diffusion-2-1-unclip)
NOISING = {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000}


def as_decoder(cfg, components):
    """`components` as a Stable unCLIP decoder (converted from an SD model by --method unclip), its
    image encoder --image-encoder's where given; refused in one line where it cannot be one."""
    family = family_of(components)
    given = None if cfg.image_encoder is None else encoder_folder(Path(cfg.image_encoder), cfg.method)
    if family.name != "unclip":
        if cfg.method != "unclip":
            return components
        latent = components.vae.config.latent_channels
        if family.name != "sd" or components.unet.config.in_channels != latent:
            raise UsageError(
                f"--method unclip makes a Stable unCLIP decoder from an SD 1.x/2.x text-to-image model (or "
                f"fine-tunes an unCLIP one); this model is {family.label} with {components.unet.config.in_channels} "
                "input channels"
            )
        if given is None:
            raise UsageError("--method unclip on an SD model needs --image-encoder DIR (a CLIP image encoder folder)")
    if given is None:
        if components.unclip.get("image_encoder") is None:
            raise UsageError("this unCLIP model has no image encoder (image_encoder/); give one with --image-encoder")
        return components
    encoder, processor = image_tower(given, cfg.allow_pickle)
    width = int(encoder.config.projection_dim)
    if family.name == "unclip" and width != embedding_width(components):
        raise UsageError(
            f"the image encoder {given} makes {width}-wide embeddings; this decoder takes {embedding_width(components)}"
        )
    if family.name != "unclip":
        components.unet = _decoder_unet(components.unet, width, cfg.seed)
        components.unclip = {"image_normalizer": _normalizer(width), "image_noising_scheduler": dict(NOISING)}
    components.unclip.update(image_encoder=encoder, feature_extractor=processor)
    return components


def _normalizer(width: int):
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    return StableUnCLIPImageNormalizer(embedding_dim=width).eval().requires_grad_(False)


def _decoder_unet(unet, width: int, seed: int):
    """The SD UNet with a projection class embedding for (B, 2 x width) labels, seeded; the embedding's
    output layer zero, so the new UNet predicts what the old one did."""
    from diffusers import UNet2DConditionModel

    config = {**dict(unet.config), "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * width}
    torch.manual_seed(seed)
    new = UNet2DConditionModel.from_config(config).to(unet.dtype)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("class_embedding.") for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(new.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(new.class_embedding.linear_2.bias)
    return new.eval()


class DecoderSource(BatchSource):
    """BatchSource + each sample's noised CLIP image embedding as the UNet's class label."""

    def __init__(self, components, dataset, *args, **kwargs):
        place_unclip(components, kwargs["device"], kwargs["dtype"])
        self.embed_cache = []  # per image (views, D), filled by the caching pre-pass (_views)
        super().__init__(components, dataset, *args, **kwargs)
        if self.posteriors is None:
            self.embed_cache = None
        fit_normalizer(components.unclip["image_normalizer"], self.embed_cache)

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [-1, 1] -> (b, D), as generation's variations encode a picture."""
        parts = self.c.unclip
        return encode_pictures(parts["image_encoder"], parts["feature_extractor"], to_pil(pixels)).float().cpu()

    def _views(self, pixels: torch.Tensor) -> list:
        """As BatchSource._views, keeping the pictures' image embeddings."""
        views = [self._embed(pixels)] + ([self._embed(pixels.flip(-1))] if self.flip else [])
        self.embed_cache += list(torch.stack(views, 1))
        return super()._views(pixels)

    def context(self, indices: list[int], gen: torch.Generator, size_ids=None):
        """BatchSource.context with the class labels: the picked views' embeddings noised to random levels."""
        context = super().context(indices, gen, size_ids)
        if self.embed_cache is None:
            embeds = self._embed(self.picked)
        else:
            embeds = torch.stack([self.embed_cache[i][v] for i, v in self.picked])
        levels = torch.randint(0, max_noise_level(self.c) + 1, (len(indices),), generator=gen)
        noise = torch.randn(embeds.shape, generator=gen)
        labels = noised_labels(self.c, *(x.to(self.device) for x in (embeds, levels, noise)))
        labels = labels * (~self.dropped).to(self.device, labels.dtype)[:, None]  # the unconditional rows' zeros
        return with_labels(context, labels.to(context.hidden.dtype))


@torch.no_grad()
def fit_normalizer(normalizer, embeds: list | None) -> None:
    """A new normaliser (mean 0, std 1) takes the dataset's embedding statistics."""
    if not (bool((normalizer.mean == 0).all()) and bool((normalizer.std == 1).all())):
        return
    if embeds is None:
        raise UsageError(
            "a new unCLIP decoder's image normaliser takes its statistics from the cached image embeddings: "
            "drop --no-cache and use --crop center"
        )
    stacked = torch.cat(embeds)
    normalizer.mean.copy_(stacked.mean(0, keepdim=True).to(normalizer.mean.device))
    normalizer.std.copy_(spread(stacked).to(normalizer.std.device))
