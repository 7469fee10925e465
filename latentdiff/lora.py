"""LoRA adapters (Hu et al. 2021) through peft: add them for training, save them in the file
layout diffusers' `load_lora_weights` reads, and apply a saved LoRA to a loaded model."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelError

LORA_FILE = "pytorch_lora_weights.safetensors"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def add_adapters(module, rank: int, targets: list[str]) -> None:
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
    if hasattr(module, "add_adapter"):
        module.add_adapter(config)
    else:  # pragma: no cover - transformers models all have add_adapter
        raise ModelError(f"{type(module).__name__} cannot take LoRA adapters")


def save_lora(out: Path, unet, text_encoder=None, base_model: str | None = None, defaults: dict | None = None):
    """Write OUT/pytorch_lora_weights.safetensors (diffusers format) and OUT/latentdiff.json."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    te_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)) if text_encoder else None
    StableDiffusionPipeline.save_lora_weights(str(out), unet_lora_layers=unet_layers,
                                              text_encoder_lora_layers=te_layers, safe_serialization=True)
    meta = {"lora": LORA_FILE, "base_model": base_model, **(defaults or {})}
    (Path(out) / "latentdiff.json").write_text(json.dumps(meta, indent=2))


def lora_base(path: Path) -> str | None:
    """The base model a LoRA folder was trained on, or None when `path` is no LoRA folder."""
    meta = path / "latentdiff.json"
    if not (path / LORA_FILE).is_file() or not meta.is_file():
        return None
    from .model_checks import check_defaults, read_json_object

    info = check_defaults(read_json_object(meta, "LoRA"), meta)
    return info.get("base_model") or "default"


def apply_lora(components, path: Path, allow_pickle: bool = False) -> None:
    """Merge a saved LoRA into the model's weights (fused: no inference overhead)."""
    from diffusers import StableDiffusionPipeline

    from .weights import load_state_dict

    sd = load_state_dict(path / LORA_FILE, allow_pickle)
    unet_sd = {k[len("unet."):]: v for k, v in sd.items() if k.startswith("unet.")}
    te_sd = {k: v for k, v in sd.items() if k.startswith("text_encoder.")}
    if not unet_sd and not te_sd:
        raise ModelError(f"{path / LORA_FILE} holds no unet or text_encoder LoRA weights")
    if unet_sd:
        components.unet.load_lora_adapter(unet_sd, prefix=None, adapter_name="latentdiff")
        components.unet.fuse_lora()
        components.unet.unload_lora()
    if te_sd:
        StableDiffusionPipeline.load_lora_into_text_encoder(te_sd, network_alphas=None,
                                                            text_encoder=components.text_encoder,
                                                            prefix="text_encoder", adapter_name="latentdiff")
        from peft.tuners.tuners_utils import BaseTunerLayer

        for m in components.text_encoder.modules():
            if isinstance(m, BaseTunerLayer):
                m.merge()
        _strip_peft(components.text_encoder)


def _strip_peft(module) -> None:
    """Replace merged LoRA layers by their base layers, so the model is plain again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in list(module.named_children()):
        if isinstance(child, BaseTunerLayer):
            setattr(module, name, child.get_base_layer())
        else:
            _strip_peft(child)
