"""Write a trained LoRA as kohya's sd-scripts does, the layout A1111, ComfyUI, Forge and InvokeAI read:
`lora_unet_<module path with _>` / `lora_te_...` (SDXL: `lora_te1_`, `lora_te2_`) with `.lora_down.weight`,
`.lora_up.weight` and `.alpha`, plus kohya's `ss_*` metadata.

The key mapping is diffusers' own (`convert_state_dict_to_kohya`, peft -> kohya); we only fix what it
leaves: the per-layer alpha (it writes the rank, which is right only when alpha == rank), the SD 1/2
text encoder prefix (it always writes `lora_te1_`), and the `text_model.` level that transformers 5
dropped from CLIPTextModel but every kohya reader still expects.
"""

from __future__ import annotations

from pathlib import Path

from latentdiff.runtime.files import as_umask_allows

KOHYA_FILE = "lora_kohya.safetensors"
ADAPTER = "default"  # peft's name for the one adapter latentdiff trains


def save_kohya(path: Path, modules: dict, metadata: dict | None = None, components=None) -> Path:
    """Write the peft LoRA layers of `modules` ({"unet": .., "text_encoder": .., "text_encoder_2": ..},
    the names diffusers' converter expects) to `path` in kohya's layout, with `metadata` added to
    the network's own (`ss_network_module`, `ss_network_dim`, `ss_network_alpha`) and, given the
    `components` it was trained on, the base's (`ss_base_model_version`, `ss_v2`; SDXL's key names)."""
    from safetensors.torch import save_file

    sdxl = components is not None and _is_sdxl(components)
    version = None if components is None else base_model_version(components)
    base = {"ss_base_model_version": version, "ss_v2": None if version is None else version.startswith("sd_v2")}
    tensors, ranks, alphas = {}, set(), set()
    for name, module in modules.items():
        for key, value, rank, alpha in _kohya_tensors(name, module):
            tensors[key if sdxl else key.replace("lora_te1_", "lora_te_", 1)] = value
            if rank is not None:
                ranks.add(rank)
                alphas.add(alpha)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": _one(ranks),
        "ss_network_alpha": _one(alphas),
        **{k: str(v) for k, v in {**base, **(metadata or {})}.items() if v is not None},
    }
    save_file(tensors, str(path), metadata=meta)
    as_umask_allows(path)
    return Path(path)


def _kohya_tensors(name: str, module):
    """(kohya key, tensor, rank, alpha) of each tensor of `module`'s LoRA; rank and alpha only on alphas.
    Kohya's alpha means scale = alpha / rank, so alpha = rank x peft's scaling (rsLoRA included)."""
    import torch
    from diffusers.utils.state_dict_utils import StateDictType, convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict

    prefix = name
    if name.startswith("text_encoder") and not hasattr(module, "text_model"):
        prefix = f"{name}.text_model"  # transformers 5's CLIPTextModel lost this level; kohya keys keep it
    for key, value in get_peft_model_state_dict(module, adapter_name=ADAPTER).items():
        one = {f"{prefix}.{key}": value.detach().float().contiguous().cpu()}
        converted = convert_state_dict_to_kohya(one, original_type=StateDictType.PEFT)
        layer = module.get_submodule(key.rsplit(".lora_A.", 1)[0]) if ".lora_A." in key else None
        for kohya_key, tensor in converted.items():
            if kohya_key.endswith(".alpha") and layer is not None:
                rank = layer.r[ADAPTER]
                alpha = rank * layer.scaling[ADAPTER]
                yield kohya_key, torch.tensor(alpha, dtype=torch.float32), rank, alpha
            else:
                yield kohya_key, tensor, None, None


def _one(values: set) -> str:
    """kohya's `ss_network_dim` / `ss_network_alpha`: the value, or "Dynamic" when layers differ."""
    if len(values) != 1:
        return "Dynamic"
    (value,) = values
    return str(float(value)) if isinstance(value, float) else str(value)


def base_model_version(components) -> str | None:
    """kohya's `ss_base_model_version` ("sd_v1", "sd_v2", "sd_v2_v", "sdxl_base_v1-0") for the
    released architectures, told by the UNet's cross-attention width; None for any other model
    (a tiny test model, a model trained from scratch), which then claims no base."""
    unet = components.unet.config
    if _is_sdxl(components):
        return "sdxl_base_v1-0" if unet.get("cross_attention_dim") == 2048 else None
    version = {768: "sd_v1", 1024: "sd_v2"}.get(unet.get("cross_attention_dim"))
    if version and components.scheduler_config.get("prediction_type") == "v_prediction":
        version += "_v"
    return version


def _is_sdxl(components) -> bool:
    """SDXL names its two encoders' layers lora_te1_/lora_te2_ in kohya's files."""
    # Here, not at the top: families/ imports torch, which reading a LoRA file's names does not need.
    from latentdiff.families.registry import family_of

    return family_of(components).name == "sdxl"
