"""Build a model from an architecture config (random weights), for training from scratch.

An architecture is a YAML file (see configs/models/) with one section per component, each
holding the keyword arguments of its diffusers/transformers class:

    unet: {...}          # UNet2DConditionModel
    vae: {...}           # AutoencoderKL
    text_encoder: {...}  # CLIPTextConfig (vocab_size and special ids come from the tokenizer)
    tokenizer: {num_merges: 2000, max_length: 77}   # BPE trained on the training captions
    scheduler: {_class_name: DDPMScheduler, ...}
    defaults: {steps: 25, guidance: 7.5}            # recommended sampling settings
    init_from: runs/stage1                          # optional: warm start (see warm_start)
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

    init = _init_model(arch)
    tok_cfg = dict(arch.get("tokenizer") or {})
    if tokenizer is None and init is not None:
        tokenizer = init.tokenizer
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
    )


def _init_model(arch: dict):
    ref = arch.get("init_from")
    if ref is None:
        return None
    from .errors import ModelError
    from .models import load_components

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
