"""The components of a model (Components) and their diffusers-format folder as we write it.

Loading goes down once: models/hub.py (a reference -> a folder), models/configs.py (every config
read and checked), models/assemble.py (modules built on the meta device), models/weights.py (the
weights assigned).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentdiff.models.configs import DEFAULTS_FILE, MAX_NOISE_LEVEL, TEXT_PARTS
from latentdiff.runtime.files import as_umask_allows
from latentdiff.runtime.libraries import quiet_libraries

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "requires_safety_checker": False,
    "image_encoder": [None, None],
    "scheduler": ["diffusers", None],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    defaults: dict
    text_encoder_2: Any = None  # SDXL's CLIPTextModelWithProjection
    tokenizer_2: Any = None
    index: dict = field(default_factory=dict)  # INDEX_OPTIONS found in model_index.json
    # A diffusion upscaler's parts beside the UNet (StableDiffusionUpscalePipeline layout):
    # {"low_res_scheduler": config, "max_noise_level": int}; {} for other models.
    upscaler: dict = field(default_factory=dict)

    def text_encoders(self) -> list:
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]

    @property
    def is_upscaler(self) -> bool:
        """A diffusion upscaler (StableDiffusionUpscalePipeline): the low-res image is 3 extra UNet channels."""
        return self.unet.config.in_channels == self.vae.config.latent_channels + 3

    @property
    def is_sdxl(self) -> bool:
        """SDXL-style UNets take pooled text embeddings and size ids (`text_time`)."""
        return self.unet.config.get("addition_embed_type") == "text_time"


def save_components(c: Components, out: Path, scheduler_class: str, extra_defaults: dict | None = None):
    """Write the diffusers layout with safetensors weights, loadable by StableDiffusionPipeline
    (SDXL: StableDiffusionXLPipeline, or its Img2Img pipeline for a refiner)."""
    quiet_libraries()
    out.mkdir(parents=True, exist_ok=True)
    c.unet.save_pretrained(out / "unet", safe_serialization=True)
    c.vae.save_pretrained(out / "vae", safe_serialization=True)
    for te_name, tok_name in TEXT_PARTS:
        if getattr(c, te_name) is not None:
            getattr(c, te_name).save_pretrained(out / te_name, safe_serialization=True)
            getattr(c, tok_name).save_pretrained(str(out / tok_name))
    as_umask_allows(*(out / name for name in ("unet", "vae", *(n for n, _ in TEXT_PARTS)) if (out / name).is_dir()))
    sched = {**c.scheduler_config, "_class_name": scheduler_class}
    low = {"_class_name": "DDPMScheduler", **c.upscaler["low_res_scheduler"]} if c.upscaler else None
    for name, config in (("scheduler", sched), ("low_res_scheduler", low)):
        if config is not None:
            (out / name).mkdir(exist_ok=True)
            (out / name / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    (out / "model_index.json").write_text(json.dumps(model_index(c, scheduler_class), indent=2))
    defaults = {**c.defaults, **(extra_defaults or {})}
    if defaults:
        (out / DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2))


def model_index(c: Components, scheduler_class: str) -> dict:
    import diffusers

    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__, "scheduler": ["diffusers", scheduler_class]}
    if c.upscaler:  # StableDiffusionUpscalePipeline's arguments: no image encoder, a watermarker slot
        for name in ("image_encoder", "requires_safety_checker"):
            index.pop(name)
        return {**index, "_class_name": "StableDiffusionUpscalePipeline", "watermarker": [None, None],
                "low_res_scheduler": ["diffusers", c.upscaler["low_res_scheduler"].get("_class_name", "DDPMScheduler")],
                "max_noise_level": c.upscaler["max_noise_level"]}
    if not c.is_sdxl:
        return index
    for name in ("safety_checker", "requires_safety_checker"):
        index.pop(name)
    refiner = c.text_encoder is None
    index["_class_name"] = "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline"
    for te_name, tok_name in TEXT_PARTS:
        te = getattr(c, te_name)
        index[te_name] = ["transformers", type(te).__name__] if te is not None else [None, None]
        index[tok_name] = ["transformers", "CLIPTokenizer"] if te is not None else [None, None]
    # The base pipeline takes no `requires_aesthetics_score` (diffusers warns about it).
    options = {"force_zeros_for_empty_prompt": not refiner, **({"requires_aesthetics_score": True} if refiner else {})}
    return {**index, **options, **c.index}


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def upscaler_settings(components: Components) -> dict:
    """The low-res scheduler config and max noise level that diffusers keeps beside the UNet (its
    defaults where the model lacks them), the level capped by the UNet's class embedding table."""
    settings = {"low_res_scheduler": {"_class_name": "DDPMScheduler"}, "max_noise_level": MAX_NOISE_LEVEL,
                **components.upscaler}
    classes = components.unet.config.num_class_embeds
    if classes:  # the class embedding table must hold the level too
        settings["max_noise_level"] = min(settings["max_noise_level"], int(classes) - 1)
    return settings
