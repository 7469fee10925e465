"""Device and precision choice."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch

from latentdiff.errors import UsageError

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


@dataclass(frozen=True)
class CpuBf16:
    """What this CPU, as torch and oneDNN see it, can do in bf16."""

    runs: bool  # bf16 matmuls and convolutions compute at all (possibly emulated, slowly)
    prepack: bool  # oneDNN's bf16 kernels and weight prepacking run (AVX-512 BW/VL/DQ, AVX-NE-CONVERT, AMX)
    native: bool  # bf16 arithmetic in hardware (AMX or AVX-512 BF16), where it beats fp32 on large models

    def describe(self, fp32_flag: str = "--dtype auto") -> str:
        """`fp32_flag`: what the command's user passes for fp32 (generate's auto picks it here;
        finetune and train-vae take --mixed-precision no)."""
        if self.native:
            return "native bf16 (AMX or AVX-512 BF16): oneDNN kernels with prepacked weights"
        if self.prepack:
            return "oneDNN bf16 kernels with prepacked weights (no native bf16 arithmetic)"
        if self.runs:
            return (
                "plain bf16 (oneDNN's bf16 kernels and weight prepacking do not run on this CPU; "
                f"expect it to be many times slower than fp32: {fp32_flag})"
            )
        return "no bf16 support"


def _probe_runs() -> bool:
    x = torch.ones(1, 2, 4, 4, dtype=torch.bfloat16)
    torch.nn.functional.conv2d(x, torch.ones(2, 2, 3, 3, dtype=torch.bfloat16), padding=1)
    return bool(torch.isfinite(x.flatten(1) @ torch.ones(32, 2, dtype=torch.bfloat16)).all())


def _probe_prepack() -> bool:
    """Run, on tiny tensors, the very oneDNN ops `prepack_cpu_weights` relies on: the only reliable
    answer (their availability depends on the CPU, the torch build and ONEDNN_MAX_CPU_ISA)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    conv, lin = torch.nn.Conv2d(2, 2, 3, padding=1).bfloat16(), torch.nn.Linear(4, 4).bfloat16()
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(conv.weight.to_mkldnn(), [1, 1], [1, 1], [1, 1], 1)
    x = torch.ones(1, 2, 4, 4, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    torch.ops.mkldnn._convolution_pointwise(x, packed, conv.bias, [1, 1], [1, 1], [1, 1], 1, "none", [], "")
    packed = torch.ops.mkldnn._reorder_linear_weight(lin.weight, 2)
    torch.ops.mkldnn._linear_pointwise(torch.ones(2, 4, dtype=torch.bfloat16), packed, lin.bias, "none", [], "")
    return True


def _probe(fn) -> bool:
    try:
        with torch.no_grad():
            return fn()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False


def _hardware_bf16() -> bool:
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


@lru_cache(maxsize=1)
def cpu_bf16() -> CpuBf16:
    """Probed once per process by running the ops, not by reading /proc/cpuinfo names."""
    runs = _probe(_probe_runs)
    prepack = runs and _probe(_probe_prepack)
    return CpuBf16(runs=runs, prepack=prepack, native=prepack and _hardware_bf16())


@lru_cache(maxsize=None)
def notice(message: str) -> None:
    """Say `message` on stderr once per process."""
    print(f"latentdiff: {message}", file=sys.stderr, flush=True)


def resolve_dtype(name: str, device: torch.device, model_pref: str | None = None) -> torch.dtype:
    """auto: fp16 on CUDA/MPS; on CPU the model's recorded preference, else bf16 where native.
    bf16 on a CPU that cannot compute it at all falls back to fp32, saying so."""
    name = (name or "auto").strip().lower()
    if name != "auto" and name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; use auto, fp32, fp16 or bf16")
    if name == "auto" and device.type in ("cuda", "mps"):
        return torch.float16
    if name == "auto":
        name = model_pref if model_pref in DTYPES else "bf16"
        if name == "bf16" and not cpu_bf16().native:  # bf16 only pays (and was measured) on native bf16
            name = "fp32"
    if device.type == "cpu" and DTYPES[name] == torch.bfloat16 and not cpu_bf16().runs:
        notice("this CPU cannot compute in bf16 here; using fp32 instead")
        return torch.float32
    note_cpu_bf16(device, DTYPES[name])
    return DTYPES[name]


def note_cpu_bf16(device: torch.device, dtype: torch.dtype, fp32_flag: str = "--dtype auto") -> None:
    """Say, in one line, what bf16 costs on a CPU without bf16 arithmetic (generation and training,
    whose fp32 flag is `--mixed-precision no`)."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_bf16().native:
        notice(f"bf16 on this CPU: {cpu_bf16().describe(fp32_flag)}")


def wants_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """channels_last (NHWC) lets oneDNN run convolutions without reordering activations. On an AMX
    CPU in bf16 it made the SD1.5 UNet ~13% and the VAE decoder ~2.5x faster. On CUDA it is applied
    only together with torch.compile (runtime/compile.py), as diffusers advises. Where oneDNN has no
    bf16 kernels (AVX2-only CPUs) the default layout is the tested one. fp32: wants_channels_last_vae."""
    return wants_prepacked_weights(device, dtype)


def wants_channels_last_vae(device: torch.device, vae_dtype: torch.dtype) -> bool:
    """The VAE alone in fp32 on the CPU: on a 2-core AVX2 EPYC its decode took 0.79x (1 thread) to
    0.93x (2) of the time at 64 px and 0.94x at 256 px, its pixels within 0.005/255 of the default
    layout's; the fp32 UNet gained nothing there (0.96-1.01x), so it keeps the parity layout
    (benchmarks/channels_last_cpu.py, results/channels_last_cpu-*)."""
    return device.type == "cpu" and vae_dtype == torch.float32


def wants_prepacked_weights(device: torch.device, dtype: torch.dtype) -> bool:
    """The oneDNN bf16 fast path, only where the probe ran its ops (see cpu_bf16)."""
    return device.type == "cpu" and dtype == torch.bfloat16 and cpu_bf16().prepack


def use_channels_last(*modules) -> None:
    for m in modules:
        m.to(memory_format=torch.channels_last)


def place_layout(unet, vae, device: torch.device, dtype: torch.dtype) -> None:
    """UNet and VAE in the memory layout that runs fastest on `device` in `dtype` (see above)."""
    if wants_channels_last(device, dtype):
        use_channels_last(unet, vae)
    elif wants_channels_last_vae(device, vae.dtype) and all(p.dim() <= 4 for p in vae.parameters()):
        use_channels_last(vae)  # an image VAE (a video one's 3D convolutions have no such layout)


def _pack(m) -> bool:
    """Pack `m.weight` for oneDNN if it is (still) a CPU bf16 weight; False: use the plain path."""
    w = m.weight
    if w.dtype != torch.bfloat16 or w.device.type != "cpu" or w.requires_grad:
        return False
    if m._ld_packed is None or m._ld_packed_from != w.data_ptr():  # not yet, or weights replaced
        if m._ld_packed_from is None and m._ld_packed is None:
            m._ld_packed_from = -1  # first call: plain path (a one-step run never earns packing back)
            return False
        if isinstance(m, torch.nn.Conv2d):
            m._ld_packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                w.to_mkldnn(), list(m.padding), list(m.stride), list(m.dilation), m.groups
            )
        else:
            m._ld_packed = torch.ops.mkldnn._reorder_linear_weight(w, 2 * 1024)
        m._ld_packed_from = w.data_ptr()
    return True


def _packed_conv_forward(self, x):
    if x.dtype != torch.bfloat16 or not _pack(self):
        return torch.nn.Conv2d.forward(self, x)
    return torch.ops.mkldnn._convolution_pointwise(
        x, self._ld_packed, self.bias, self.padding, self.stride, self.dilation, self.groups, "none", [], ""
    )


def _packed_linear_forward(self, x):
    if x.dtype != torch.bfloat16 or not _pack(self):
        return torch.nn.Linear.forward(self, x)
    return torch.ops.mkldnn._linear_pointwise(x, self._ld_packed, self.bias, "none", [], "")


def prepack_cpu_weights(module) -> int:
    """Hand oneDNN the bf16 conv/linear weights of `module` once, in its own blocked layout, instead
    of reordering them on every call (what inductor's `freezing` does, without compiling). On the
    SD1.5 UNet this made a step ~1.5x faster at 256x256 and ~1.15x at 512x512; convolution results
    are bit-identical, linear ones differ at bf16 rounding level. Each layer packs on its second
    call (packing the SD1.5 UNet costs ~1.7 s, which a one-step run would never earn back) and
    repacks if its weight was replaced since. The dense weights stay (the module still saves, moves
    and casts normally), so the packed copies cost their size in memory.
    Returns the number of layers set up (0 where the CPU or torch build cannot run the oneDNN ops)."""
    if not cpu_bf16().prepack:
        return 0
    import types

    n = 0
    for m in module.modules():
        if type(m) is torch.nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            m.forward = types.MethodType(_packed_conv_forward, m)
        elif type(m) is torch.nn.Linear:
            m.forward = types.MethodType(_packed_linear_forward, m)
        else:
            continue
        m._ld_packed, m._ld_packed_from = None, None
        n += 1
    return n


def unpack_cpu_weights(module) -> None:
    """Undo `prepack_cpu_weights` (before torch.compile, which packs weights its own way)."""
    for m in module.modules():
        if "_ld_packed" in m.__dict__:
            del m._ld_packed, m._ld_packed_from, m.forward


@contextmanager
def cast_while(modules, dtype: torch.dtype | None):
    """`modules` in `dtype` inside the block (None: as they are), each back in its own dtype after."""
    before = [m.dtype for m in modules]
    try:
        if dtype is not None:
            for m in modules:
                m.to(dtype)
        yield
    finally:
        if dtype is not None:
            for m, d in zip(modules, before):
                m.to(d)
