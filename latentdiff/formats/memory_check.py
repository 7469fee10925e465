"""The weights a model folder loads, in bytes of the compute dtype, checked against the memory the
machine has before any of them is read (runtime.memory.check_weights_fit), with the options that
would make them fit."""

from __future__ import annotations

import torch

from latentdiff.formats.transformer_configs import CLASSES
from latentdiff.runtime.device import DTYPE_NAMES
from latentdiff.runtime.memory import check_weights_fit
from latentdiff.runtime.offload import weights_need


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
