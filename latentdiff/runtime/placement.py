"""Where and in what dtype a model runs: the device, the compute dtype (the model's recorded CPU
dtype or its size decide `auto` on CPU), the VAE's dtype and the conv weights' layout, chosen once
per load from the model's configs, before any weights are read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdiff.errors import UsageError
from latentdiff.runtime.device import notice, resolve_device, resolve_dtype, wants_channels_last
from latentdiff.runtime.levers import BF16_MIN_PARAMS as CPU_BF16_MIN_PARAMS  # --speed's bf16 rule too


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


@dataclass(frozen=True)
class DtypeRule:
    """A family's precision rule (its `dtype_rule`): `fp16` is "ok", "warn" (activations exceed
    fp16's range; diffusers clamps them, ComfyUI allows it) or "refuse" (NaN or broken images;
    ComfyUI's supported_inference_dtypes omit fp16); `bf16_first`: trained and released in bf16, so
    `auto` takes bf16 on a GPU that computes it."""

    label: str
    fp16: str = "ok"
    bf16_first: bool = False


def family_dtype(name: str, device: torch.device, rule: DtypeRule) -> str:
    """The dtype name `--dtype name` comes to for a family of `rule` on `device` (then resolve_dtype):
    auto on a GPU is bf16 for a bf16-first family where the GPU computes bf16, else fp16 where the
    family allows it, else fp32; fp16 asked for is refused or warned by the rule. The CPU keeps
    resolve_dtype's own auto (bf16 only where native)."""
    name = (name or "auto").strip().lower()
    gpu = device.type in ("cuda", "mps")
    if name == "auto" and gpu:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        name = "bf16" if rule.bf16_first and bf16 else "fp32" if rule.fp16 == "refuse" else "fp16"
        if name == "fp32":
            notice(f"{rule.label} does not run in fp16 and this GPU has no bf16: computing in fp32")
    if name == "fp16" and rule.fp16 == "refuse":
        raise UsageError(
            f"{rule.label} overflows fp16 (NaN or broken images; it was trained in bf16): use --dtype bf16, "
            "or fp32 where the device has no bf16"
        )
    if name == "fp16" and rule.fp16 == "warn":
        notice(
            f"{rule.label} in fp16: its activations exceed fp16's range and are clamped, so images may lose "
            "detail; bf16 (where the device computes it) is what it was trained in"
        )
    return name


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
