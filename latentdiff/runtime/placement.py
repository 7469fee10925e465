"""Where and in what dtype a model runs: the device, the compute dtype (the model's recorded CPU
dtype or its size decide `auto` on CPU), the VAE's dtype and the conv weights' layout, chosen once
per load from the model's configs, before any weights are read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdiff.runtime.device import resolve_device, resolve_dtype, wants_channels_last

# Below this UNet size bf16's conversions cost more than its faster matmuls save on CPU.
CPU_BF16_MIN_PARAMS = 50_000_000


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype  # the compute dtype
    vae_dtype: torch.dtype  # vae_dtype(dtype, the model's VAE config, device)
    channels_last: bool  # conv weights in channels_last layout run fastest here


def placement(device, dtype: str, defaults: dict, unet_params: int | None, vae_config: dict) -> Placement:
    """`device` a name or torch.device, `dtype` a name or auto (resolve_dtype, with the model's
    latentdiff.json `defaults` and UNet size)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    target = resolve_dtype(dtype, dev, cpu_dtype_pref(defaults, unet_params))
    return Placement(dev, target, vae_dtype(target, vae_config, dev), wants_channels_last(dev, target))


def cpu_dtype_pref(defaults: dict, unet_params: int | None) -> str | None:
    """A model's recorded CPU dtype (its latentdiff.json `defaults`), else fp32 for UNets too small
    to gain from bf16."""
    if defaults.get("cpu_dtype"):
        return defaults["cpu_dtype"]
    return "fp32" if unet_params is not None and unet_params < CPU_BF16_MIN_PARAMS else None


def vae_dtype(dtype, vae_config, device=None):
    """fp16 VAEs may overflow in decode (black images); configs that know it ask for fp32
    (`force_upcast`, diffusers' default). On CUDA the VAE still runs in fp16 first (half the
    memory traffic): Pipeline.decode's NaN guard redoes an overflowed decode in fp32 and then keeps
    that VAE in fp32 (SDXL's VAE, for one, overflows every time)."""
    upcast = dtype == torch.float16 and vae_config.get("force_upcast", False)
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return torch.float32 if upcast and not on_cuda else dtype


def fp32_layers(cls, dtype) -> tuple:
    """The layer names `cls` keeps in fp32 when it runs in fp16 (transformers' `_keep_in_fp32_modules`:
    T5's feed-forward output `wo`, which overflows fp16), as its from_pretrained keeps them; else ()."""
    return tuple(getattr(cls, "_keep_in_fp32_modules", None) or ()) if dtype == torch.float16 else ()


def in_layers(name: str, layers: tuple) -> bool:
    """Whether the parameter or module `name` (dotted) lies in one of `layers`."""
    return any(part in layers for part in name.split("."))


def cast(module, device, dtype):
    """`module.to(device, dtype)`, but the layers it keeps in fp32 under fp16 (fp32_layers) stay fp32."""
    layers = fp32_layers(type(module), dtype)
    if not layers:
        return module.to(device=device, dtype=dtype)
    module.to(device=device)
    for name, sub in module.named_modules():
        target = torch.float32 if in_layers(name, layers) else dtype
        for t in (*sub.parameters(recurse=False), *sub.buffers(recurse=False)):
            if t.is_floating_point():
                t.data = t.data.to(target)
    return module
