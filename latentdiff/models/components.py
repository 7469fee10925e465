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

from latentdiff.models.configs import DEFAULTS_FILE, TEXT_PARTS, denoiser_folder
from latentdiff.models.unclip_parts import save_unclip
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
    unet: Any  # the denoiser: a UNet2DConditionModel, or a transformer (Flux's, saved in transformer/)
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    defaults: dict
    text_encoder_2: Any = None  # SDXL's CLIPTextModelWithProjection, Flux's T5EncoderModel
    tokenizer_2: Any = None
    text_encoder_3: Any = None  # SD3's T5EncoderModel (None: an SD3 without T5)
    tokenizer_3: Any = None
    index: dict = field(default_factory=dict)  # INDEX_OPTIONS found in model_index.json
    # A diffusion upscaler's parts beside the UNet (StableDiffusionUpscalePipeline layout):
    # {"low_res_scheduler": config, "max_noise_level": int}; {} for other models.
    upscaler: dict = field(default_factory=dict)
    # A Stable unCLIP model's parts beside the UNet (models/unclip_parts.py); {} for other models.
    unclip: dict = field(default_factory=dict)

    def text_encoders(self) -> list:
        return [m for m in (self.text_encoder, self.text_encoder_2, self.text_encoder_3) if m is not None]


def save_components(c: Components, out: Path, scheduler_class: str, extra_defaults: dict | None = None):
    """Write the diffusers layout with safetensors weights, loadable by StableDiffusionPipeline
    (SDXL: StableDiffusionXLPipeline, or its Img2Img pipeline for a refiner)."""
    quiet_libraries()
    out.mkdir(parents=True, exist_ok=True)
    index = model_index(c, scheduler_class)
    denoiser = denoiser_folder(index, out)
    c.unet.save_pretrained(out / denoiser, safe_serialization=True)
    # Here, not at the top: families/ imports torch, and preflight reads this module before torch loads.
    from latentdiff.families.pixel_space import is_pixel

    pixel = is_pixel(c.vae.config)
    if not pixel:  # a pixel model has no VAE to write
        c.vae.save_pretrained(out / "vae", safe_serialization=True)
    for te_name, tok_name in TEXT_PARTS:
        if getattr(c, te_name) is not None:
            getattr(c, te_name).save_pretrained(out / te_name, safe_serialization=True)
            getattr(c, tok_name).save_pretrained(str(out / tok_name))
    as_umask_allows(*(out / name for name in (denoiser, "vae", *(n for n, _ in TEXT_PARTS)) if (out / name).is_dir()))
    sched = {**c.scheduler_config, "_class_name": scheduler_class}
    low = {"_class_name": "DDPMScheduler", **c.upscaler["low_res_scheduler"]} if c.upscaler else None
    low_name = "image_noising_scheduler" if pixel else "low_res_scheduler"  # IF's name for it
    for name, config in (("scheduler", sched), (low_name, low)):
        if config is not None:
            (out / name).mkdir(exist_ok=True)
            (out / name / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    if c.unclip:
        save_unclip(c.unclip, out)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    defaults = {**c.defaults, **(extra_defaults or {})}
    if defaults:
        (out / DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2))


def model_index(c: Components, scheduler_class: str) -> dict:
    import diffusers

    # Here, not at the top: families/ imports torch, and preflight reads this module before torch loads.
    from latentdiff.families.registry import family_of

    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__, "scheduler": ["diffusers", scheduler_class]}
    return family_of(c).model_index(c, index)  # the family's pipeline class and arguments


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)
