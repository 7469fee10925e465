"""Putting `--speed`'s levers (runtime/levers.py) on a loaded pipeline, and what they rule out."""

from __future__ import annotations

import torch

from latentdiff.errors import UsageError
from latentdiff.runtime.device import notice, unpack_cpu_weights, use_channels_last
from latentdiff.runtime.int8 import is_quantized, quantize_weights
from latentdiff.runtime.levers import Levers, Speed, cpu_features, levers_for, parse_speed


def speed_up(pipe, speed, calls: int | None = None) -> Levers:
    """Put the levers `speed` (auto, off, or lever names; runtime/levers.parse_speed) chooses on
    `pipe` (a Pipeline) for a process expecting `calls` UNet image-steps (None: unknown); sets and
    returns `pipe.levers`. `auto` follows the CPU's rule only on the CPU (a GPU keeps --compile)."""
    speed = parse_speed(speed)
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 0):
        raise UsageError(f"calls must be a whole number of UNet image-steps (>= 0) or None, got {calls!r}")
    unet = pipe.components.unet
    params = getattr(pipe, "unet_params", 0) or sum(p.numel() for p in unet.parameters())
    bf16 = pipe.dtype == torch.bfloat16
    if pipe.device.type != "cpu":
        speed = Speed(named=speed.named)
    levers = levers_for(speed, cpu_features(), params, calls, bf16)
    if levers.int8 and not is_quantized(unet):
        unpack_cpu_weights(unet)  # the bf16 fast path packs dense weights; int8 ones are rebuilt per call
        quantize_weights(unet)
    if levers.channels_last:
        use_channels_last(unet)
    if levers.compile:
        pipe.compile("auto")
    pipe.speed, pipe.levers = speed.text, levers
    if not speed.off:
        notice(f"speed {speed.text}: {levers.describe()} ({cpu_features().kind} CPU)")
    return levers


def check_savable(pipe) -> None:
    """Refuse saving what no longer holds diffusers' weights: fused projections (CUDA compile), int8."""
    if pipe.compiled and pipe.device.type == "cuda":
        raise UsageError(
            "a pipeline compiled on CUDA holds fused attention projections and cannot be "
            "saved; save it from a pipeline loaded without compile"
        )
    if is_quantized(pipe.components.unet):
        raise UsageError("a pipeline with int8 weights (speed int8) cannot be saved; load it without int8 to save it")


def check_mergeable(unet) -> None:
    """LoRAs merge into dense weights; an int8 UNet rebuilds its weights on each call, so refuse."""
    if is_quantized(unet):
        raise UsageError("LoRAs cannot be merged into int8 weights (speed int8); load the model without int8")
