"""Build a model from an architecture config (random weights), for training from scratch.

An architecture is a YAML file (see configs/models/) with one section per component, each
holding the keyword arguments of its diffusers/transformers class:

    unet: {...}          # UNet2DConditionModel
    vae: {...}           # AutoencoderKL
    text_encoder: {...}  # CLIPTextConfig (vocab_size and special ids come from the tokenizer)
    tokenizer: {num_merges: 2000, max_length: 77}   # BPE trained on the training captions
    scheduler: {_class_name: DDPMScheduler, ...}
    defaults: {steps: 25, guidance: 7.5}            # recommended sampling settings
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UsageError
from .models import Components, load_vae

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
    missing = [s for s in SECTIONS if s not in arch]
    if missing:
        raise UsageError(f"architecture config {path} lacks section(s): {', '.join(missing)}")
    return arch


def build_components(arch: dict, texts: list[str], seed: int = 0, tokenizer=None) -> Components:
    """Fresh components with seeded random weights; the tokenizer is trained on `texts`
    unless one is given."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .models import quiet_libraries
    from .tokenizer import build_tokenizer

    quiet_libraries()

    tok_cfg = dict(arch.get("tokenizer") or {})
    if tokenizer is None:
        tokenizer = build_tokenizer(texts, tok_cfg.get("num_merges", 2000), tok_cfg.get("max_length", 77))
    te_cfg = {
        "max_position_embeddings": tokenizer.model_max_length,
        **arch["text_encoder"],
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**arch["unet"])
        # A path instead of a mapping: the autoencoder was trained first (LDM stage one).
        vae = load_vae(Path(arch["vae"])) if isinstance(arch["vae"], str) else AutoencoderKL(**arch["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
    except (TypeError, ValueError) as e:
        raise UsageError(f"architecture config does not build: {e}") from None
    return Components(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(arch["scheduler"]),
        defaults=dict(arch.get("defaults") or {}),
    )
