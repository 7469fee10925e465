"""The weights a model folder loads, in bytes of the compute dtype, checked against the memory the
machine has before any of them is read (runtime.memory.check_weights_fit), with the options that
would make them fit."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from latentdiff.families.registry import FAMILIES
from latentdiff.formats.comfy_models import file_params, is_comfy_models
from latentdiff.formats.gguf_file import is_gguf
from latentdiff.formats.transformer_configs import CLASSES
from latentdiff.formats.transformer_file import OTHER_PARTS, check_components
from latentdiff.models.configs import read_configs
from latentdiff.models.weights import safetensors_header
from latentdiff.runtime.device import DTYPE_NAMES
from latentdiff.runtime.memory import check_weights_fit
from latentdiff.runtime.offload import weights_need
from latentdiff.runtime.placement import family_dtype, placement


def weight_sizes(cfgs, place) -> dict[str, int]:
    """Bytes of each component's weights (models.configs.ModelConfigs' stored counts) in the dtype it loads in."""
    sizes = {}
    for name, (count, _) in cfgs.values.items():
        dtype = place.vae_dtype if name == "vae" else place.dtype
        sizes[cfgs.denoiser if name == "unet" else name] = int(count or 0) * dtype.itemsize
    return sizes


def check_weights(family, cfgs, place, offload: str) -> None:
    """Refuse in one line a model (`cfgs`, to load as `place` says) whose weights cannot fit."""
    sizes = weight_sizes(cfgs, place)
    need = weights_need(sizes, place.device, offload)
    what = f"{family.label} in {DTYPE_NAMES.get(place.dtype, place.dtype)}"
    check_weights_fit(what, sizes, place.device, need, memory_options(family, place, offload))


def check_file_weights(path: Path, family_name: str, components, device, dtype: str, offload: str, files=((), None)):
    """The same for a transformer file with the `components` folder: the transformer as the file holds
    it (GGUF: quantized) or its parameter count in the compute dtype (fp8 and bf16 files alike), the
    folder's text encoders and VAE beside it (ComfyUI's models folder: the files chosen as them, `files`
    the --text-encoder files and --vae chosen over its own)."""
    family = FAMILIES[family_name]
    where = check_components(path, family_name, components)
    gguf = is_gguf(path)
    count = None if gguf else sum(math.prod(v["shape"]) for k, v in _tensors(path) if not k.startswith(OTHER_PARTS))
    if is_comfy_models(where):
        parts = file_params(where, family_name, family.label, *files)
        place = placement(device, family_dtype(dtype, device, family.dtype_rule({})), {}, count, {})
        sizes = {k: n * (place.vae_dtype if k == "vae" else place.dtype).itemsize for k, n in parts.items()}
    else:
        folder = read_configs(where)
        place = placement(device, family_dtype(dtype, device, family.dtype_rule({})), {}, count, folder.vae)
        sizes = {k: v for k, v in weight_sizes(folder, place).items() if k != folder.denoiser}
    sizes["transformer"] = path.stat().st_size if gguf else count * place.dtype.itemsize
    need = weights_need(sizes, place.device, offload)
    what = f"{family.label} in {DTYPE_NAMES.get(place.dtype, place.dtype)}"
    check_weights_fit(what, sizes, place.device, need, memory_options(family, place, offload))


def _tensors(path: Path):
    return ((k, v) for k, v in safetensors_header(path).items() if k != "__metadata__")


def memory_options(family, place, offload: str) -> str:
    """What would make a model's weights fit: a smaller dtype, a quantized file, offloading."""
    found = []
    if place.dtype == torch.float32:
        found.append("--dtype bf16 halves them")
    if family.name in CLASSES:
        found.append(
            "an fp8 or GGUF transformer file (--model FILE --components DIR) holds the transformer in half or less"
        )
    if place.device.type != "cpu" and offload == "none":
        found.append("--offload model keeps one component on the GPU at a time (--offload sequential: one layer, slow)")
    elif place.device.type != "cpu" and offload == "model":
        found.append("--offload sequential keeps one layer at a time on the GPU (slow)")
    found.append("or a machine with more memory")
    return "options: " + "; ".join(found)
