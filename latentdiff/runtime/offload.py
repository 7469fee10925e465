"""Components on the compute device only while they work (`--offload`), through accelerate's hooks
as diffusers' `enable_model_cpu_offload` / `enable_sequential_cpu_offload` install them.

- `none`: every component on the device for the whole run (fastest; the device holds them all).
- `model`: every component waits in CPU RAM; each moves to the device when it is called (its
  forward, or the VAE's encode/decode, which diffusers routes through the same hook) and the one
  before it in the chain (text encoders -> denoiser -> VAE) moves back. The device holds the
  largest component, not their sum. After each batch all of them go back (`release`).
- `sequential`: every layer's weights wait in CPU RAM and move to the device for that layer's call
  alone: the device holds little more than one layer, at a large cost in speed (the last resort).

The text encoders are offloaded, not freed: a batch after the first, a hires pass and the server
encode prompts again, and reading T5-XXL back from disk costs more than keeping it in RAM. Every
mode gives the same pixels (the same computation in the same dtype on the same device).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentdiff.errors import UsageError

if TYPE_CHECKING:  # torch only for the annotations: config/params.py reads MODES at start-up, before torch
    import torch

MODES = ("none", "model", "sequential")
_HOOK = "_ld_offload_hook"  # a module's model-offload hook (accelerate's UserCpuOffloadHook)
_DEVICE = "_ld_execution_device"  # where an offloaded module computes


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"unknown offload {mode!r}; use {', '.join(MODES)}")
    return mode


def chain(components) -> list:
    """The modules in the order a generation calls them: text encoders, the denoiser, the VAE (the
    one a family's view wraps: families/vae_view.py)."""
    vae = components.vae
    return [*components.text_encoders(), components.unet, vae._modules.get("vae", vae)]


def place(components, device: torch.device, mode: str) -> None:
    """The components' modules (already in their dtypes) on `device` (mode none), or waiting in CPU
    RAM with the hooks that bring them to `device` when called (model, sequential)."""
    import accelerate

    check_mode(mode)
    modules = chain(components)
    if mode == "none":
        for m in modules:
            m.to(device)
        return
    previous = None
    setattr(components.vae, _DEVICE, device)  # a family's view of its VAE computes where the VAE does
    for m in modules:
        setattr(m, _DEVICE, device)
        if mode == "sequential":
            # diffusers' enable_sequential_cpu_offload: buffers travel too where the module has parameters of its own
            accelerate.cpu_offload(m, device, offload_buffers=len(m._parameters) > 0)
            continue
        _, previous = accelerate.cpu_offload_with_hook(m, device, prev_module_hook=previous)
        setattr(m, _HOOK, previous)


def release(components) -> None:
    """Every model-offloaded module back in CPU RAM (after a batch: the next starts from the text encoders)."""
    for m in chain(components):
        hook = getattr(m, _HOOK, None)
        if hook is not None:
            hook.offload()


def execution_device(module) -> torch.device:
    """Where `module` computes: the device `place` offloads it to, else where its weights are (under
    sequential offload they are on the meta device, never where inputs should go)."""
    device = getattr(module, _DEVICE, None)
    return device if device is not None else next(module.parameters()).device


def weights_need(sizes: dict[str, int], device: torch.device, mode: str) -> tuple[int, int]:
    """(bytes the compute device must hold, bytes CPU RAM must hold) for components' weights of
    `sizes` bytes each: on the CPU all of them in RAM; on a GPU all of them there (loaded straight to
    it), the largest (model offload) or about one layer's (sequential; counted as none) with all in RAM."""
    total, largest = sum(sizes.values()), max(sizes.values(), default=0)
    if device.type == "cpu":
        return 0, total
    return {"none": (total, 0), "model": (largest, total), "sequential": (0, total)}[mode]
