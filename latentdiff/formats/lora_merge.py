"""LoRA adapters (Hu et al. 2021) through peft: add them for training, save them in the file
layout diffusers' `load_lora_weights` reads, and find a saved LoRA's weights file and base model
(formats/lora.py merges it into a loaded model)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.models.checks import check_defaults
from latentdiff.models.files import confined, read_json_object
from latentdiff.models.fingerprint import model_hash
from latentdiff.runtime.files import as_umask_allows

LORA_FILE = "pytorch_lora_weights.safetensors"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def add_adapters(module, rank: int, targets: list[str]) -> None:
    """Inject trainable LoRA layers into `module` (a UNet or a text encoder) with peft itself.

    Not through `module.add_adapter`: transformers' wrapper of the same call refuses to run unless
    peft is at least the version that transformers release was tested with (5.25 wants peft 0.22,
    which the registry may not have yet), while peft's own injection works with any of them."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(config, module)


def save_lora(
    out: Path,
    unet,
    text_encoder=None,
    base_model: str | None = None,
    defaults: dict | None = None,
    text_encoder_2=None,
    weights: str = LORA_FILE,
):
    """Write OUT/latentdiff.json naming `weights` as the LoRA's file, and OUT/pytorch_lora_weights.safetensors
    (diffusers format) unless `weights` names another one (a kohya file written beside it: save_kohya).
    `text_encoder_2` (SDXL) goes in as `text_encoder_2.*`, as StableDiffusionXLPipeline writes it."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def layers(module):
        return convert_state_dict_to_diffusers(get_peft_model_state_dict(module)) if module is not None else None

    if weights == LORA_FILE:
        host = StableDiffusionPipeline
        parts = {"unet_lora_layers": layers(unet), "text_encoder_lora_layers": layers(text_encoder)}
        if text_encoder_2 is not None:
            host, parts = StableDiffusionXLPipeline, {**parts, "text_encoder_2_lora_layers": layers(text_encoder_2)}
        host.save_lora_weights(str(out), **parts, safe_serialization=True)
    write_lora_meta(out, weights, base_model, defaults)


def write_lora_meta(out: Path, weights: str, base_model: str | None, defaults: dict | None) -> None:
    """OUT/latentdiff.json naming the LoRA's weights file, its base model and sampling defaults (the
    weights file made readable as the umask allows)."""
    as_umask_allows(Path(out) / weights)
    meta = {"lora": weights, **base_record(base_model, Path(out)), **(defaults or {})}
    (Path(out) / "latentdiff.json").write_text(json.dumps(meta, indent=2))


def base_record(base_model: str | None, out: Path) -> dict:
    """How latentdiff.json names the base: a hub id as it is; a local folder by its path relative
    to the LoRA folder (valid when both move together), its absolute path, and its hash."""
    if base_model is None:
        return {"base_model": None}
    local = Path(base_model)
    if not local.is_dir():
        return {"base_model": base_model}
    local = local.resolve()
    return {
        "base_model": str(local),
        "base_model_relative": os.path.relpath(local, Path(out).resolve()),
        "base_model_hash": model_hash(local),
    }


def is_lora_folder(path: Path) -> bool:
    """A LoRA run's folder: latentdiff.json beside the LoRA weights it names."""
    return (path / "latentdiff.json").is_file() and lora_file(path).is_file()


def lora_base(path: Path) -> str | None:
    """The base model a LoRA folder was trained on (a local path, a hub id, or "default" for the
    shipped model), or None when `path` is no LoRA folder."""
    if not is_lora_folder(path):
        return None
    meta = path / "latentdiff.json"
    info = check_defaults(read_json_object(meta, "LoRA"), meta)
    base = info.get("base_model")
    if not base:
        return "default"
    relative = info.get("base_model_relative")
    tried = [path / relative] if relative else []
    tried += [Path(base)] if relative or Path(base).is_absolute() else []
    if not tried:
        return base  # a hub id
    for candidate in tried:
        if candidate.is_dir():
            _check_base_hash(candidate, info.get("base_model_hash"), path)
            return str(candidate.resolve())
    where = " or ".join(str(c) for c in dict.fromkeys(tried))
    raise ModelError(
        f"the base model of LoRA {path} (hash {info.get('base_model_hash', 'unknown')}) is not at {where}; "
        f"pass it yourself: --model BASE --lora {path}"
    )


def lora_file(folder: Path) -> Path:
    """The weights file of a LoRA folder: the one its latentdiff.json names (a run written with
    --lora-format kohya holds only the kohya file), else pytorch_lora_weights.safetensors."""
    meta = Path(folder) / "latentdiff.json"
    if not meta.is_file():
        return Path(folder) / LORA_FILE
    name = check_defaults(read_json_object(meta, "LoRA"), meta).get("lora") or LORA_FILE
    return confined(Path(folder), name, str(meta))


def _check_base_hash(base: Path, expected: str | None, lora: Path) -> None:
    if expected and model_hash(base) != expected:
        warnings.warn(
            f"the base model at {base} is not the one LoRA {lora} was trained on (hash {model_hash(base)}, "
            f"expected {expected}); the result may differ",
            stacklevel=3,
        )
