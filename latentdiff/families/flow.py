"""What the flow-matching transformer families (Flux.1, SD 3/3.5, Qwen-Image, Z-Image) share: they sample with their
own FlowMatchEulerDiscreteScheduler (the UNet families' sampler table does not apply), count an
image-to-image run's steps as their diffusers img2img pipelines do, and shift the schedule by the
image's token count where the scheduler config asks for a dynamic shift."""

from __future__ import annotations

import numpy as np
import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import Family
from latentdiff.sampling.schedulers import resolved

# The attention layers diffusers' train_dreambooth_lora_qwen_image.py and _z_image.py adapt by default.
ATTENTION_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")


def calculate_shift(seq_len: int, config, max_shift: float = 1.15) -> float:
    """The schedule's shift mu for `seq_len` image tokens: linear from base_shift at
    base_image_seq_len to max_shift at max_image_seq_len (diffusers' calculate_shift; `max_shift`:
    the pipeline's default where the config gives none, 1.15 in FluxPipeline, 1.16 in SD3's)."""
    base, most = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    lo, hi = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
    m = (hi - lo) / (most - base)
    return seq_len * m + (lo - m * base)


class FlowMatching(Family):
    """A family sampled by its model's own flow-matching Euler scheduler."""

    transformer_class = ""  # the diffusers class its transformer's config file names
    marks: tuple[str, ...] = ()  # config keys its transformer has (a loaded config names no class) ...
    unmarks: tuple[str, ...] = ()  # ... and keys it has not
    # Fine-tuning (training/flow.py): the transformer's layers a LoRA run adapts, as the family's diffusers
    # LoRA trainer names them ((): `finetune` does not train the family yet), and its trainer's default
    # timestep sampling (diffusers' weighting_scheme).
    lora_targets: tuple[str, ...] = ()
    weighting_scheme = "none"

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        named = unet.get("_class_name")
        if named is not None:
            return named == self.transformer_class
        return all(k in unet for k in self.marks) and not any(k in unet for k in self.unmarks)

    def lora_layers(self, components) -> list[str]:
        """The peft target names of a LoRA run on this model (`lora_targets`, model-dependent where a name
        alone would also match a layer list)."""
        return list(self.lora_targets)

    def check_scheduler(self, name: str | None) -> None:
        if name is not None:
            raise UsageError(
                f"{self.label} samples with its own flow-matching Euler scheduler; scheduler {name!r} is for "
                "the UNet families (leave the scheduler unset)"
            )

    def own_sampler(self, name: str) -> bool:
        """Forge writes the flow-matching Euler as Euler with the Simple schedule (sampling.schedulers.FOREIGN_A1111)."""
        return resolved(name) == ("euler", "simple")

    def strength_steps(self, steps: int, strength: float) -> int:
        """FluxImg2ImgPipeline's and StableDiffusion3Img2ImgPipeline's count: the steps after
        int(steps - steps * strength), in floats."""
        return steps - int(max(steps - min(steps * strength, steps), 0))


class PackedFlowMatching(FlowMatching):
    """A family whose transformer packs 2x2 latent patches into tokens (Flux.1, Qwen-Image): image
    sides are multiples of two latent pixels, and the schedule is FluxPipeline's."""

    DEFAULT_SAMPLE_SIZE = 128  # the pipelines' default image: 128 latent pixels a side

    def set_timesteps(self, scheduler, steps: int, size: tuple[int, int], factor: int) -> None:
        """Sigmas 1 .. 1/steps, shifted by mu of the image's token count (FluxPipeline, QwenImagePipeline;
        FLUX.2's shift also depends on the steps)."""
        config = scheduler.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        side = self.size_step(None, factor)  # pixels a token covers
        mu = self.shift((size[1] // side) * (size[0] // side), steps, config)
        if sigmas is None:
            scheduler.set_timesteps(steps, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, mu=mu)

    def shift(self, tokens: int, steps: int, config) -> float:
        """The schedule's shift mu for an image of `tokens` tokens sampled in `steps` steps."""
        return calculate_shift(tokens, config)

    def size_step(self, components, factor: int) -> int:
        return 2 * factor  # 2x2 latent patches

    def native_size(self, components, factor: int) -> int:
        return self.DEFAULT_SAMPLE_SIZE * factor


class CaptionCache:
    """What a transformer family's prompt encoder gives the trainer (training/batches.py): each caption's
    context encoded once by the frozen encoders, and a batch's context from them. Needs `embed(texts)`
    returning a context with `cat`, `to` and row slicing."""

    @torch.no_grad()
    def embed_each(self, texts: list[str], batch: int = 16) -> dict:
        """{text: its own context row, on the CPU} for each of `texts` and the empty text (each row as its
        chunk encoded it: Flux's at the full padded length, Qwen's padded and masked)."""
        texts = sorted(set(texts) | {""})
        out = {}
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            context = self.embed(chunk).to(device="cpu")
            out.update({t: context[k : k + 1] for k, t in enumerate(chunk)})
        return out

    def training_context(self, texts: list[str], size_ids=None, cached=None, grad=False, device=None):
        """A training batch's conditioning: its captions' `cached` rows (`embed_each`) or, uncached, the
        captions encoded now; the encoders stay frozen (training/flow.py refuses to train them)."""
        if cached is None:
            with torch.no_grad():
                return self.embed(texts).to(device=device)
        context = cached[texts[0]]
        for t in texts[1:]:
            context = context.cat(cached[t])
        return context.to(device=device)
