"""Device and precision choice."""

from __future__ import annotations

from functools import lru_cache

import torch

from .errors import UsageError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("device 'mps' asked for, but Metal is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """AMX or AVX-512 BF16: bf16 matmuls run natively and beat fp32 on large models."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_dtype(name: str, device: torch.device, model_pref: str | None = None) -> torch.dtype:
    """auto: fp16 on CUDA/MPS; on CPU the model's recorded preference, else bf16 where native."""
    name = (name or "auto").strip().lower()
    if name != "auto":
        if name not in DTYPES:
            raise UsageError(f"unknown dtype {name!r}; use auto, fp32, fp16 or bf16")
        return DTYPES[name]
    if device.type in ("cuda", "mps"):
        return torch.float16
    if model_pref in DTYPES:
        return DTYPES[model_pref]
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
