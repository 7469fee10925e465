"""Speed levers beyond eager PyTorch: torch.compile modes (CUDA graphs, max-autotune), the on-disk
compile cache that makes a second process cheap, fp8 through torchao (opt-in), and the training
side (fused AdamW, channels_last, a compiled UNet forward/backward).

What was measured where is in docs/performance.md ("Performance on CUDA"); the CUDA branches here were written
without a GPU and are exercised by tests/runtime/test_cuda.py (`pytest -m gpu`) on one.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from latentdiff.errors import UsageError
from latentdiff.runtime.device import unpack_cpu_weights, use_channels_last

# auto: reduce-overhead (CUDA graphs) on CUDA, inductor's default mode (with freezing) on CPU.
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "fp8")


def compile_mode(value) -> str | None:
    """`compile=` as given (False/None, True, or a mode name) -> a mode name, or None (eager)."""
    if value is None or value is False:
        return None
    if value is True:
        return "auto"
    mode = value.strip().lower() if isinstance(value, str) else None
    if mode not in COMPILE_MODES:
        raise UsageError(f"unknown compile mode {value!r}; use one of: {', '.join(COMPILE_MODES)}")
    if mode == "fp8" and importlib.util.find_spec("torchao") is None:
        raise UsageError("compile mode fp8 needs torchao (pip install torchao), which is not installed here")
    return mode


def resolve_mode(mode: str, device: torch.device) -> str:
    if mode == "auto":
        return "reduce-overhead" if device.type == "cuda" else "default"
    return mode


def enable_compile_cache() -> None:
    """Compiled kernels, inductor's FX graphs and AOTAutograd's graphs on disk, keyed by the graph,
    the shapes and the torch/triton versions, so a later process reuses them."""
    os.environ.setdefault(
        "TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "latentdiff", "inductor")
    )
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    try:
        import torch._functorch.config as functorch

        functorch.enable_autograd_cache = True
    except (ImportError, AttributeError):  # older torch: the FX graph cache alone
        pass


def inductor_options(mode: str, device: torch.device, cudagraphs: bool = True, dtype=torch.float32) -> dict:
    """torch.compile options for `mode` (torch.compile takes a mode or options, not both); CUDA
    graphs only on CUDA. CPU in bf16 adds `freezing` (weights folded into the graph and prepacked
    for oneDNN: ~1.8x on the SD1.5 UNet on an AMX CPU). Freezing turns AOTAutograd's on-disk cache
    off, so every process re-traces (+13 s per process for the shipped model, which in fp32 ran
    only ~8% faster frozen): fp32 on CPU compiles without it."""
    from torch._inductor import list_mode_options

    options = dict(list_mode_options("max-autotune" if mode == "fp8" else mode))
    if device.type != "cuda" or not cudagraphs:
        options.pop("triton.cudagraphs", None)
    if device.type == "cpu" and dtype == torch.bfloat16:
        options["freezing"] = True
    return options


def compile_for_inference(unet, vae, device: torch.device, mode: str = "auto") -> str:
    """torch.compile the UNet and the VAE decoder in place (state dict names are unchanged);
    returns the mode used.
    CPU: inductor, with `freezing` in bf16 (see inductor_options).
    CUDA: channels_last and fused QKV projections (diffusers' recipe), then the mode: by default
    reduce-overhead, i.e. CUDA graphs for the UNet, which at small batch removes the launch cost of
    its ~1,000 kernels per step. The VAE decoder never runs under CUDA graphs (a tiled decode keeps
    several of its outputs alive). The first call of each new shape compiles; the cache keeps it."""
    enable_compile_cache()
    mode = resolve_mode(mode, device)
    if mode == "fp8" and device.type != "cuda":
        raise UsageError("compile mode fp8 needs a CUDA GPU with fp8 tensor cores (Ada or Hopper)")
    unpack_cpu_weights(unet)
    if device.type == "cuda":
        use_channels_last(unet, vae)
        for m in (unet, vae):
            if hasattr(m, "fuse_qkv_projections"):
                m.fuse_qkv_projections()
        if mode == "fp8":
            quantize_fp8(unet, device)
    options = inductor_options(mode, device, dtype=unet.dtype)
    if options.get("triton.cudagraphs"):
        _compile_with_cuda_graphs(unet, options)
    else:
        unet.compile(options=options)
    vae.decoder.compile(options=inductor_options(mode, device, cudagraphs=False, dtype=vae.dtype))
    return mode


def _compile_with_cuda_graphs(unet, options: dict) -> None:
    """A CUDA graph's outputs live in its memory pool and are overwritten by its next replay, so each
    call starts a new graph step and hands out a copy of the (small) noise prediction: the sampling
    loop and the schedulers keep earlier predictions (multistep methods, fp32 runs)."""
    compiled = torch.compile(unet.forward, options=options)

    def forward(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        if isinstance(out, tuple):
            return (out[0].clone(), *out[1:])
        return type(out)(sample=out.sample.clone())

    unet.forward = forward


def quantize_fp8(unet, device: torch.device) -> None:
    """fp8 (e4m3) weights and dynamically scaled fp8 activations for the UNet's linear layers
    (torchao); needs compute capability 8.9+ (Ada, Hopper). Opt-in: its PSNR is to be measured."""
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise UsageError(
            f"compile mode fp8 needs fp8 tensor cores (compute capability 8.9+, Ada or Hopper); "
            f"{torch.cuda.get_device_name(device)} is {major}.{minor}"
        )
    import torchao.quantization as q

    config = (
        q.Float8DynamicActivationFloat8WeightConfig()
        if hasattr(q, "Float8DynamicActivationFloat8WeightConfig")
        else q.float8_dynamic_activation_float8_weight()
    )
    # fp8 GEMMs need both dimensions divisible by 16; the small time-embedding layers stay as they are.
    q.quantize_(
        unet,
        config,
        filter_fn=lambda m, _name: (
            isinstance(m, torch.nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0
        ),
    )


# ---- training ----------------------------------------------------------------------------
def adamw_kwargs(on_cuda: bool) -> dict:
    """fused=True: one kernel per step for all of AdamW on CUDA instead of a few per tensor group.
    CPU keeps the default (foreach) implementation, whose numbers the CPU tests and runs were made with."""
    return {"fused": True} if on_cuda else {}


def prepare_unet_for_training(unet, device: torch.device, compile: bool) -> None:
    """`finetune --compile`: channels_last on CUDA, then torch.compile of the UNet's forward (and so,
    through AOTAutograd, its backward), with the on-disk cache. The state dict keeps its names."""
    if not compile:
        return
    enable_compile_cache()
    if device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    unet.compile()
