"""Where a model comes from: a folder, a single file, a hub id, a LoRA run or the shipped
default, with its VAE swap, LoRA files and embeddings, loaded into the compute dtype.

The trip goes down once: the request checked, the reference resolved to a folder (models/hub.py),
every config read and checked (models/configs.py), the device and dtype chosen (runtime/device.py),
the modules built and their weights assigned (models/assemble.py), then the files added to them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import latentdiff.config.params as params
import latentdiff.models.hub as hub
from latentdiff.errors import ModelError, UsageError
from latentdiff.families.registry import family_for, family_of
from latentdiff.formats import addons
from latentdiff.formats.comfy_models import is_comfy_models
from latentdiff.formats.gguf_file import compute_in
from latentdiff.formats.lora import LoraSpec, apply_loras, describe
from latentdiff.formats.lora_merge import lora_base
from latentdiff.formats.memory_check import check_file_weights, check_weights
from latentdiff.formats.single_file import load_single_file
from latentdiff.formats.transformer_file import load_transformer_file, transformer_family
from latentdiff.formats.transformer_parts import apply_text_encoder_files
from latentdiff.formats.transformer_tables import SUPPORTED
from latentdiff.models.assemble import build
from latentdiff.models.components import Components
from latentdiff.models.configs import read_configs
from latentdiff.runtime.device import resolve_device
from latentdiff.runtime.placement import family_dtype, placement
from latentdiff.runtime.reading import check_regular, is_special


@dataclass
class Loaded:
    components: Components
    device: torch.device
    dtype: torch.dtype
    ref: str | None  # what the user named, resolved to an absolute path where it is local
    path: Path | None  # the model folder (or file) the weights came from
    addons: object  # formats.addons.AddOns: the LoRAs and embeddings applied
    vae_ref: str | None
    parts: dict  # {"components": folder, "text_encoders": [files]} where given, as absolute paths


def load(
    model,
    device,
    dtype,
    allow_pickle,
    compile,
    vae,
    loras,
    embeddings,
    components=None,
    text_encoders=(),
    offload="none",
) -> Loaded:
    """Everything `Pipeline.from_pretrained` takes, checked and loaded (see its docstring)."""
    given = dict(model=model, device=device, dtype=dtype, allow_pickle=allow_pickle, compile=compile, offload=offload)
    given = params.check_fields(given, params.api_label)
    model, device, dtype, offload = given["model"], given["device"], given["dtype"], given["offload"]
    vae = None if vae is None else params.path_text(params.api_label, "vae", vae)
    components = None if components is None else params.path_text(params.api_label, "components", components)
    text_encoders = params.FIELDS["text_encoders"](params.api_label, "text_encoders", text_encoders)
    lora_specs, embedding_specs = addons.parse(loras, embeddings)
    local = Path(model).expanduser() if model is not None else None
    if local is not None and is_special(local):
        check_regular(local, "model file", ModelError)  # a FIFO, device or socket: refused, never read
    if components is not None and not (local is not None and local.is_file()):
        raise UsageError(f"--components is for a transformer file as --model ({SUPPORTED}); {model} is none")
    # ComfyUI's models folder takes the --text-encoder and --vae files as its parts, chosen over its own.
    comfy = components is not None and is_comfy_models(Path(components).expanduser())
    if local is not None and local.is_file():
        files = (text_encoders, vae) if comfy else ((), None)
        (comps, place), path, base = (
            _load_file(local, device, dtype, allow_pickle, components, offload, files),
            local,
            None,
        )
    else:
        comps, path, place, base = _load_folder(local, model, device, dtype, allow_pickle, bool(lora_specs), offload)
    if vae is not None and not comfy:
        # Here, not at the top: a VAE file is rare, and its converter imports diffusers' single-file code.
        from latentdiff.formats.vae import load_vae_ref

        comps.vae = load_vae_ref(vae, comps.vae.config, allow_pickle)
    if text_encoders and not comfy:
        apply_text_encoder_files(comps, text_encoders, allow_pickle)
    added = addons.apply(comps, lora_specs, embedding_specs, allow_pickle)
    if base is not None:
        added.model_lora = describe(LoraSpec(local))
    ref = str(local.resolve()) if local is not None and local.exists() else model
    vae_ref = None if vae is None else str(Path(vae).expanduser().resolve())
    given = {"components": components and _absolute(components), "text_encoders": [_absolute(f) for f in text_encoders]}
    return Loaded(comps, place.device, place.dtype, ref, path, added, vae_ref, {k: v for k, v in given.items() if v})


def _absolute(path) -> str:
    return str(Path(path).expanduser().resolve())


def _load_file(
    local: Path, device: str, dtype: str, allow_pickle: bool, components=None, offload="none", files=((), None)
):
    """(components, placement) of a single-file checkpoint (a transformer file: with the rest of the
    model from the folder `components`, refused first where the weights cannot fit); the device is
    checked before the file is read, the dtype chosen after (the file's own defaults and UNet size pick it);
    `files`: the --text-encoder files and --vae a ComfyUI models folder as `components` takes as its parts."""
    dev = resolve_device(device)
    if transformer_family(local) is not None:
        check_file_weights(local, transformer_family(local), components, dev, dtype, offload, files)
        comps = load_transformer_file(local, components, allow_pickle, *files)
    elif components is not None:
        raise UsageError(f"--components is for transformer files ({SUPPORTED}); {local} is not one")
    else:
        comps = load_single_file(local, allow_pickle)
    n_params = sum(p.numel() for p in comps.unet.parameters())
    dtype = family_dtype(dtype, dev, family_of(comps).dtype_rule(dict(comps.unet.config)))
    place = placement(dev, dtype, comps.defaults, n_params, dict(comps.vae.config))
    compute_in(comps.unet, place.dtype)  # a GGUF transformer's quantized layers
    return comps, place


def _load_folder(local: Path | None, model, device: str, dtype: str, allow_pickle: bool, merge=False, offload="none"):
    """Components of a diffusers folder, hub id, LoRA folder or the default model, loaded
    straight into the compute dtype where the weights allow (not when LoRA files will be
    merged: `merge`), in CPU RAM where they will be `offload`ed; with the model's path, its placement
    and the LoRA folder's base (or None). Refused first where the weights cannot fit (check_weights)."""
    base = lora_base(local) if local is not None and local.is_dir() else None
    path = hub.locate(None if base == "default" else (base or model), allow_pickle)
    cfgs = read_configs(path, defaults_from=local if base is not None else None)  # the LoRA's defaults win
    family = family_for(cfgs.unet, cfgs.vae, cfgs.index)
    dtype = family_dtype(dtype, resolve_device(device), family.dtype_rule(cfgs.unet))
    place = placement(device, dtype, cfgs.defaults, cfgs.unet_params, cfgs.vae)  # unet_params: None for pickle files
    check_weights(family, cfgs, place, offload)
    # Weights are cast to the compute dtype as they are read, never held as a full fp32 copy.
    # A LoRA is merged in the stored precision first; Pipeline() then casts the result.
    early = base is None and not merge and cfgs.unet_params is not None
    comps = build(
        cfgs,
        allow_pickle,
        device="cpu" if place.device.type == "mps" or offload != "none" else str(place.device),
        dtype=place.dtype if early else None,
        vae_dtype=place.vae_dtype if early else None,
        channels_last=early and place.channels_last,
    )
    if base is not None:
        apply_loras(comps, [LoraSpec(local)], allow_pickle)
    if cfgs.unet_params is None:
        n_params = sum(p.numel() for p in comps.unet.parameters())
        place = placement(place.device, dtype, cfgs.defaults, n_params, cfgs.vae)
    return comps, path, place, base
