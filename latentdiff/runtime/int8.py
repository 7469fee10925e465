"""Weight-only int8: a memory lever (`--speed int8`). Each covered layer keeps its weight as int8 with
one fp scale per output channel (symmetric, round to nearest) and rebuilds the weight in the compute
dtype for each call, so its weights take a quarter of their fp32 bytes between calls while the
arithmetic stays in the compute dtype. It costs time (a dequantization per layer per call) on every
CPU; what it saves and costs is measured by benchmarks/cpu_levers.py.

Our own ~40 lines rather than torchao (on the registry, but a dependency for one lever) or torch's
dynamic quantization (int8 activations too: more error, Linear layers only, deprecated in torch.ao).
A quantized module saves no diffusers weights and takes no LoRA: both are refused where they start.
"""

from __future__ import annotations

import torch

MIN_WEIGHT = 4096  # smaller weights (time embeddings' biases aside, the 1x1 projections of tiny models) stay


def _quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, per-output-channel scale shaped to broadcast over it)."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(w.shape)
    return q, scale.reshape(-1, *([1] * (w.dim() - 1))).to(w.dtype)


class _Int8Weight:
    """Mixed into Linear / Conv2d: `weight` is rebuilt from the int8 copy on each access, so the
    module's own forward (F.linear / _conv_forward with self.weight) runs unchanged."""

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_int8.to(self.weight_scale.dtype) * self.weight_scale


class Int8Linear(_Int8Weight, torch.nn.Linear):
    pass


class Int8Conv2d(_Int8Weight, torch.nn.Conv2d):
    pass


_SWAP = {torch.nn.Linear: Int8Linear, torch.nn.Conv2d: Int8Conv2d}


def quantize_weights(module: torch.nn.Module) -> int:
    """Swap `module`'s plain Linear and Conv2d layers (weights of MIN_WEIGHT values or more) for
    their int8 weight-only forms in place; returns how many. The rest keep their dtype."""
    n = 0
    for m in module.modules():
        cls = _SWAP.get(type(m))
        if cls is None or m.weight.numel() < MIN_WEIGHT:
            continue
        q, scale = _quantize(m.weight)
        del m._parameters["weight"]
        m.register_buffer("weight_int8", q)
        m.register_buffer("weight_scale", scale)
        m.__class__ = cls
        n += 1
    return n


def is_quantized(module: torch.nn.Module) -> bool:
    return any(isinstance(m, _Int8Weight) for m in module.modules())
