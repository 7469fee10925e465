"""Where a model comes from: a folder, a single file, a hub id, a LoRA run or the shipped
default, with its VAE swap, LoRA files and embeddings, loaded into the compute dtype."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import latentdiff.models.hub as hub
import latentdiff.config.params as params
from latentdiff.models.components import Components, load_components, read_defaults
from latentdiff.runtime.device import resolve_device, resolve_dtype, wants_channels_last
from latentdiff.models.weights import parameter_count

# Below this UNet size bf16's conversions cost more than its faster matmuls save on CPU.
CPU_BF16_MIN_PARAMS = 50_000_000


@dataclass
class Loaded:
    components: Components
    device: torch.device
    dtype: torch.dtype
    ref: str | None  # what the user named, resolved to an absolute path where it is local
    path: Path | None  # the model folder (or file) the weights came from
    addons: object  # formats.addons.AddOns: the LoRAs and embeddings applied
    vae_ref: str | None


def load(model, device, dtype, allow_pickle, compile, vae, loras, embeddings) -> Loaded:
    """Everything `Pipeline.from_pretrained` takes, checked and loaded (see its docstring)."""
    from latentdiff.formats import addons

    given = params.check_fields(dict(model=model, device=device, dtype=dtype, allow_pickle=allow_pickle,
                                     compile=compile), params.api_label)
    model, device, dtype = given["model"], given["device"], given["dtype"]
    lora_specs, embedding_specs = addons.parse(loras, embeddings)
    local = Path(model).expanduser() if model is not None else None
    dev = resolve_device(device)
    if local is not None and local.is_file():
        from latentdiff.formats.single_file import load_single_file

        comps, path = load_single_file(local, allow_pickle), local
        n_params = sum(p.numel() for p in comps.unet.parameters())
        target = resolve_dtype(dtype, dev, cpu_dtype_pref(comps.defaults, n_params))
    else:
        comps, path, target = _load_folder(local, model, dev, dtype, allow_pickle, merge=bool(lora_specs))
    if vae is not None:
        from latentdiff.formats.vae import load_vae_ref

        comps.vae = load_vae_ref(vae, comps.vae.config, allow_pickle)
    added = addons.apply(comps, lora_specs, embedding_specs, allow_pickle)
    from latentdiff.formats.lora_merge import is_lora_folder

    if local is not None and local.is_dir() and is_lora_folder(local):
        from latentdiff.formats.lora import LoraSpec, describe

        added.model_lora = describe(LoraSpec(local))
    ref = str(local.resolve()) if local is not None and local.exists() else model
    vae_ref = None if vae is None else str(Path(vae).expanduser().resolve())
    return Loaded(comps, dev, target, ref, path, added, vae_ref)


def _load_folder(local: Path | None, model, dev: torch.device, dtype: str, allow_pickle: bool, merge: bool = False):
    """Components of a diffusers folder, hub id, LoRA folder or the default model, loaded
    straight into the compute dtype where the weights allow (not when LoRA files will be
    merged: `merge`); with the model's path and dtype."""
    from latentdiff.formats.lora_merge import apply_lora, lora_base

    base = lora_base(local) if local is not None and local.is_dir() else None
    path = hub.resolve(None if base == "default" else (base or model), allow_pickle)
    defaults = {**read_defaults(path), **(read_defaults(local) if base is not None else {})}
    n_params = parameter_count(path / "unet")  # from safetensors headers; None for pickle files
    target = resolve_dtype(dtype, dev, cpu_dtype_pref(defaults, n_params))
    # Weights are cast to the compute dtype as they are read, never held as a full fp32 copy.
    # A LoRA is merged in the stored precision first; Pipeline() then casts the result.
    early = base is None and not merge and n_params is not None
    comps = load_components(path, allow_pickle, device="cpu" if dev.type == "mps" else str(dev),
                            dtype=target if early else None,
                            channels_last=early and wants_channels_last(dev, target))
    if base is not None:
        apply_lora(comps, local, allow_pickle)
        comps.defaults = defaults  # the base's defaults, overridden by the LoRA's
    if n_params is None:
        n_params = sum(p.numel() for p in comps.unet.parameters())
        target = resolve_dtype(dtype, dev, cpu_dtype_pref(defaults, n_params))
    return comps, path, target


def cpu_dtype_pref(defaults: dict, unet_params: int | None) -> str | None:
    """The model's recorded CPU dtype, else fp32 for UNets too small to gain from bf16."""
    if defaults.get("cpu_dtype"):
        return defaults["cpu_dtype"]
    return "fp32" if unet_params is not None and unet_params < CPU_BF16_MIN_PARAMS else None
