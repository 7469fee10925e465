"""T2I-Adapter key layouts: TencentARC's original one (`t2iadapter_*.pth`) -> diffusers' T2IAdapter.

The rule is the table of diffusers' `scripts/convert_original_t2i_adapter.py`, written for any
number of blocks and ResNets (that script asserts the released sizes):

- full adapter: `conv_in.*` -> `adapter.conv_in.*`; the original numbers its ResNets in one row,
  `body.{i * n + j}` (block i, ResNet j, n per block) -> `adapter.body.{i}.resnets.{j}`, and the
  1x1 `in_conv` that changes the width sits on a block's first ResNet -> `adapter.body.{i}.in_conv`.
  Down-sampling has no weights, so the row does not show where blocks end: n comes from the number
  of features the base UNet takes (its down blocks; SDXL adapters make one more).
- light adapter: `body.{i}.in_conv|out_conv` -> `adapter.body.{i}.in_conv|out_conv`,
  `body.{i}.body.{j}` -> `adapter.body.{i}.resnets.{j}`.
"""

from __future__ import annotations

import math
import re

from latentdiff.errors import ModelError

FULL, LIGHT = "full", "light"
ORIGINAL, DIFFUSERS = "original", "diffusers"
_MARKS = {
    (DIFFUSERS, FULL): ("adapter.conv_in.weight", "adapter.body.0.resnets.0.block1.weight"),
    (DIFFUSERS, LIGHT): ("adapter.body.0.in_conv.weight", "adapter.body.0.out_conv.weight"),
    (ORIGINAL, FULL): ("conv_in.weight", "body.0.block1.weight"),
    (ORIGINAL, LIGHT): ("body.0.in_conv.weight", "body.0.body.0.block1.weight"),
}
_FULL_KEY = re.compile(r"body\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)")
_LIGHT_KEY = re.compile(r"body\.(\d+)\.body\.(\d+)\.(block1|block2)\.(weight|bias)")


def adapter_layout(shapes: dict) -> tuple[str, str] | None:
    """(layout, variant) of a T2I-Adapter's tensors, or None when they are no adapter."""
    return next((kind for kind, marks in _MARKS.items() if all(m in shapes for m in marks)), None)


def input_channels(shapes: dict, layout: str, variant: str, where) -> tuple[int, int]:
    """(control image channels, pixel-unshuffle factor), from the first convolution's input width
    = channels x factor^2 (a grey map is 1 channel, an RGB one 3)."""
    first = _MARKS[(layout, variant)][0]
    width = int(shapes[first][1])
    channels = 3 if width % 3 == 0 else 1
    factor = math.isqrt(width // channels)
    if factor < 1 or factor * factor * channels != width:
        raise ModelError(f"{where} is a T2I-Adapter whose input width {width} fits no 1- or 3-channel control image")
    return channels, factor


def adapter_to_diffusers(sd: dict, variant: str, blocks: int, where) -> dict:
    """Original (TencentARC) names -> diffusers' T2IAdapter names; `blocks`: features it makes."""
    if variant == LIGHT:
        return {_light_name(k): v for k, v in sd.items()}
    rows = 1 + max((int(m.group(1)) for m in map(_FULL_KEY.fullmatch, sd) if m), default=-1)
    per, rest = divmod(rows, blocks)
    if rest or per < 1:
        raise ModelError(f"{where} is a T2I-Adapter of {rows} ResNets, which do not split into {blocks} blocks")
    return {_full_name(k, per): v for k, v in sd.items()}


def _full_name(key: str, per: int) -> str:
    m = _FULL_KEY.fullmatch(key)
    if m is None:
        return "adapter." + key  # conv_in; anything else is refused by name when the weights are assigned
    k, part, kind = int(m.group(1)), m.group(2), m.group(3)
    if part == "in_conv":
        return f"adapter.body.{k // per}.in_conv.{kind}"
    return f"adapter.body.{k // per}.resnets.{k % per}.{part}.{kind}"


def _light_name(key: str) -> str:
    m = _LIGHT_KEY.fullmatch(key)
    if m is None:
        return "adapter." + key  # body.{i}.in_conv / out_conv keep their names
    return f"adapter.body.{m.group(1)}.resnets.{m.group(2)}.{m.group(3)}.{m.group(4)}"


def adapter_config(shapes: dict, sdxl: bool, where) -> dict:
    """A T2IAdapter config from its diffusers-named tensors' shapes (`sdxl`: the base is SDXL,
    whose full adapters down-sample once, after the second block)."""
    layout_variant = adapter_layout(shapes)
    if layout_variant is None or layout_variant[0] != DIFFUSERS:
        raise ModelError(f"{where} lost its T2I-Adapter tensors in conversion")
    variant = layout_variant[1]
    channels, factor = input_channels(shapes, DIFFUSERS, variant, where)
    n = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("adapter.body."))
    per = len({k.split(".")[4] for k in shapes if k.startswith("adapter.body.0.resnets.")})
    if variant == LIGHT:
        widths = [shapes[f"adapter.body.{i}.out_conv.weight"][0] for i in range(n - 1)]
        kind = "light_adapter"
    else:
        widths = [shapes[f"adapter.body.{i}.resnets.0.block1.weight"][0] for i in range(n)]
        kind = "full_adapter_xl" if sdxl else "full_adapter"
    return dict(in_channels=channels, channels=widths, num_res_blocks=per, downscale_factor=factor, adapter_type=kind)
