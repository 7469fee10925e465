"""Build a model from an architecture config (random weights), for training from scratch.

An architecture is a YAML file (see configs/models/) with one section per component, each
holding the keyword arguments of its diffusers/transformers class:

    unet: {...}          # UNet2DConditionModel
    vae: {...}           # AutoencoderKL; or `pixel`: a pixel-space model (families/pixel.py), no VAE
    text_encoder: {...}  # CLIPTextConfig (vocab_size and special ids come from the tokenizer)
    tokenizer: {num_merges: 2000, max_length: 77}   # BPE trained on the training captions
    # or text_encoder: MODEL_DIR (no tokenizer section): that model's text encoder and tokenizer
    scheduler: {_class_name: DDPMScheduler, ...}
    defaults: {steps: 25, guidance: 7.5}            # recommended sampling settings
    init_from: runs/stage1                          # optional: warm start (see warm_start)
    low_res_scheduler: {_class_name: DDPMScheduler, ...}  # a diffusion upscaler (see upscaler_parts):
    max_noise_level: 350                            #   unet in_channels = latent channels + 3
    image_noising_scheduler: {...}  # a pixel SR stage (vae: pixel; IF's layout): in_channels 6, the level a timestep class
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import ModelError, UsageError
from latentdiff.families.clip import clip_text_config
from latentdiff.families.pixel_space import PixelSpace, is_pixel
from latentdiff.models.assemble import load_components, load_text_encoder, load_vae
from latentdiff.models.components import Components
from latentdiff.prompts.tokenizer import build_tokenizer
from latentdiff.runtime.libraries import quiet_libraries

SECTIONS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def is_arch_file(ref) -> bool:
    return ref is not None and Path(ref).suffix.lower() in (".yaml", ".yml") and Path(ref).is_file()


def read_arch(path) -> dict:
    import yaml

    try:
        arch = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read architecture config {path}: {e}") from None
    if not isinstance(arch, dict):
        raise UsageError(f"architecture config {path} is not a mapping")
    needed = [s for s in SECTIONS if s != "tokenizer" or not isinstance(arch.get("text_encoder"), str)]
    missing = [s for s in needed if s not in arch]
    if missing:
        raise UsageError(f"architecture config {path} lacks section(s): {', '.join(missing)}")
    return arch


def build_components(arch: dict, texts: list[str], seed: int = 0, tokenizer=None) -> Components:
    """Fresh components with seeded random weights; the tokenizer is trained on `texts`
    unless one is given."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    quiet_libraries()

    init = _init_model(arch)
    if isinstance(arch["text_encoder"], str):  # an existing model's, e.g. the base of a cascade
        text_encoder, tokenizer = _model_text_encoder(arch["text_encoder"])
    elif tokenizer is None and init is not None:
        tokenizer = init.tokenizer
    if tokenizer is None:
        tok_cfg = dict(arch.get("tokenizer") or {})
        tokenizer = build_tokenizer(texts, tok_cfg.get("num_merges", 2000), tok_cfg.get("max_length", 77))
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**arch["unet"])
        vae = _vae(arch["vae"])
        if not isinstance(arch["text_encoder"], str):
            text_encoder = CLIPTextModel(CLIPTextConfig(**clip_text_config(arch["text_encoder"], tokenizer)))
    except (TypeError, ValueError) as e:
        raise UsageError(f"architecture config does not build: {e}") from None
    if init is not None:
        warm_start(unet, init.unet, arch["init_from"])
        warm_start(text_encoder, init.text_encoder, arch["init_from"])
    return Components(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(arch["scheduler"]),
        defaults=dict(arch.get("defaults") or {}),
        upscaler=upscaler_parts(arch, unet, vae),
    )


def _vae(section):
    """The VAE section: `pixel` (none: a pixel-space model), a path (the autoencoder was trained
    first, LDM stage one), or AutoencoderKL's arguments."""
    from diffusers import AutoencoderKL

    if section == "pixel":
        return PixelSpace()
    return load_vae(Path(section)) if isinstance(section, str) else AutoencoderKL(**section)


def _model_text_encoder(ref: str):
    try:
        text_encoder, tokenizer = load_text_encoder(Path(ref))
    except ModelError as e:
        raise UsageError(f"text_encoder: {e}") from None
    return text_encoder.float(), tokenizer  # fp32 as a fresh one (shipped weights may be stored in fp16)


# diffusers' StableDiffusionUpscalePipeline sets every VAE's scaling_factor to this value when it loads.
UPSCALER_SCALING_FACTOR = 0.08333


def upscaler_parts(arch: dict, unet, vae) -> dict:
    """Components.upscaler of an architecture with a `low_res_scheduler` section ({} without one).
    The UNet must take the low-res image (3 more input channels) and hold every noise level as a
    class; the VAE is given diffusers' upscaler scaling factor (see rescale_latents)."""
    if is_pixel(vae.config):
        return pixel_sr_parts(arch, unet)
    if "low_res_scheduler" not in arch:
        return {}
    level = arch.get("max_noise_level", 350)
    channels, classes = unet.config.in_channels, unet.config.num_class_embeds
    if channels != vae.config.latent_channels + 3:
        raise UsageError(
            f"an upscaler's unet needs in_channels {vae.config.latent_channels + 3} (latents + the "
            f"low-res image), got {channels}"
        )
    if not isinstance(level, int) or level < 0 or not classes or classes <= level:
        raise UsageError(
            f"an upscaler needs a whole max_noise_level >= 0 and unet num_class_embeds above it, "
            f"got {level!r} and {classes!r}"
        )
    rescale_latents(vae, UPSCALER_SCALING_FACTOR)
    return {"low_res_scheduler": dict(arch["low_res_scheduler"]), "max_noise_level": level}


def pixel_sr_parts(arch: dict, unet) -> dict:
    """Components.upscaler of a pixel model: {} for a base, the image-noising scheduler of an SR
    stage (in_channels 6, the noise level a timestep-embedded class label, as IF's stage II)."""
    noising = arch.get("image_noising_scheduler")
    if unet.config.in_channels == 3 and noising is None:
        return {}
    if unet.config.in_channels != 6 or not isinstance(noising, dict) or unet.config.class_embed_type != "timestep":
        raise UsageError(
            "a pixel model's unet takes in_channels 3 (a base) or 6 (an SR stage, with an image_noising_scheduler "
            "section and class_embed_type: timestep)"
        )
    most = int(noising.get("num_train_timesteps", 1000)) - 1
    level = arch.get("max_noise_level", most)  # training's augmentation range; generation takes any level
    if not isinstance(level, int) or not 0 <= level <= most:
        raise UsageError(f"a pixel SR stage's max_noise_level is a whole number from 0 to {most}, got {level!r}")
    return {"low_res_scheduler": dict(noising), "max_noise_level": level}


@torch.no_grad()
def rescale_latents(vae, scaling_factor: float) -> None:
    """Give `vae` the scaling factor `scaling_factor` without changing what the diffusion model
    sees: latents are multiplied by c = old / new in the encoder's quant_conv (mean times c,
    log-variance plus 2 ln c) and divided by c in the decoder's post_quant_conv, so new latents
    times `scaling_factor` are the old ones times the old factor, and decode the same."""
    import math

    c, n = vae.config.scaling_factor / scaling_factor, vae.config.latent_channels
    if vae.quant_conv is None or vae.post_quant_conv is None:
        raise UsageError(
            "an upscaler's VAE needs use_quant_conv and use_post_quant_conv to take diffusers' "
            f"upscaler scaling factor {scaling_factor}"
        )
    vae.quant_conv.weight[:n] *= c
    vae.quant_conv.bias[:n] *= c
    vae.quant_conv.bias[n:] += 2 * math.log(c)
    vae.post_quant_conv.weight /= c
    vae.register_to_config(scaling_factor=scaling_factor)


def _init_model(arch: dict):
    ref = arch.get("init_from")
    if ref is None:
        return None
    path = Path(ref)
    if not (path / "model_index.json").is_file():
        raise UsageError(f"init_from: {ref} is not a model folder (no model_index.json)")
    try:
        return load_components(path)
    except ModelError as e:
        raise UsageError(f"init_from: {e}") from None


def warm_start(new: torch.nn.Module, old: torch.nn.Module, ref: str) -> None:
    """Copy a trained model's weights into a grown architecture. Every old tensor must find a
    home of the same shape; modules the old model lacks keep their init, except that a UNet's
    text-time embedding (`add_embedding`) starts at zero, so the grown model begins exactly
    where the old one stopped and learns to use the new path."""
    state, target = old.state_dict(), new.state_dict()
    lost = [k for k in state if k not in target or target[k].shape != state[k].shape]
    if lost:
        raise UsageError(f"init_from: {ref} does not fit this architecture ({lost[0]} has no place)")
    new.load_state_dict(state, strict=False)
    norm = getattr(getattr(new, "add_embedding", None), "norm2", None)
    if norm is not None and "add_embedding.norm2.weight" not in state:
        with torch.no_grad():
            norm.weight.zero_()
            norm.bias.zero_()
