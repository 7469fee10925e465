"""Control units before the loop: each unit's model loaded once, its control image read, checked
and brought to the output size, its weight and step range checked; in the loop each becomes a
`Residuals` of the model call (families/control.py).

Control modes (families/control.py): A1111's "balanced", "prompt" (My prompt is more important)
and "control" (ControlNet is more important), and diffusers' "guess" mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdiff.errors import UsageError
from latentdiff.families.control import ControlNetResiduals
from latentdiff.images.read import load_image

MODES = ("balanced", "prompt", "control", "guess")
MAX_UNITS = 8


@dataclass(frozen=True)
class Control:
    """One control unit as a caller gives it: `image` a path or PIL image (an already processed
    map: edges, depth, pose...), `model` a diffusers ControlNet folder or a loaded ControlNetModel,
    `weight` its conditioning scale, active from fraction `start` to `end` of the steps."""

    image: Any
    model: Any
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True)
class Unit:
    """A checked unit: its network and its control image (RGB)."""

    net: torch.nn.Module
    image: Any  # PIL RGB
    weight: float
    start: float
    end: float
    mode: str

    def residuals(self, total: int, size: tuple[int, int]) -> ControlNetResiduals:
        """This unit for a run of `total` steps at `size` (width, height): the image resized to it."""
        image = control_tensor(self.image, *size)
        return ControlNetResiduals(self.net, image, self.weight, self.start, self.end, total, self.mode)


def control_units(pipe, controls, mode: str) -> tuple[Unit, ...]:
    """The units of a call, every one checked before any work (a UsageError names the first bad one)."""
    if controls is None:
        return ()
    if isinstance(controls, Control):
        controls = [controls]
    if not isinstance(controls, (list, tuple)) or not all(isinstance(c, Control) for c in controls):
        raise UsageError("controls must be a list of latentdiff.Control units")
    if len(controls) > MAX_UNITS:
        raise UsageError(f"{len(controls)} control units given; at most {MAX_UNITS} are supported")
    if mode not in MODES:
        raise UsageError(f"control_mode must be one of {', '.join(MODES)}, got {mode!r}")
    return tuple(_unit(pipe, c, k, mode) for k, c in enumerate(controls))


def _unit(pipe, c: Control, k: int, mode: str) -> Unit:
    name = f"controls[{k}]"
    weight, start, end = (_fraction(f"{name}.{n}", v, hi) for n, v, hi in _numbers(c))
    if start >= end:
        raise UsageError(f"{name}: start ({start}) must be below end ({end})")
    net = _network(pipe, c.model, name)
    return Unit(net, control_image(c.image, name), weight, start, end, mode)


def _numbers(c: Control):
    return (("weight", c.weight, 2.0), ("start", c.start, 1.0), ("end", c.end, 1.0))


def _fraction(name: str, value, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
        raise UsageError(f"{name} must be a number from 0 to {hi}, got {value!r}")
    return float(value)


def _network(pipe, model, name: str) -> torch.nn.Module:
    """A loaded ControlNetModel of `pipe`'s family, on its device and in its dtype (cached per folder)."""
    from diffusers import ControlNetModel

    if isinstance(model, ControlNetModel):
        net = model
    elif isinstance(model, (str, Path)):
        net = _load(pipe, Path(model), name)
    else:
        raise UsageError(f"{name}.model must be a ControlNet folder or a diffusers ControlNetModel")
    want = pipe.components.unet.config.cross_attention_dim
    if net.config.cross_attention_dim != want:
        raise UsageError(
            f"{name}.model is a ControlNet for a model with {net.config.cross_attention_dim}-wide text "
            f"embeddings; this model ({pipe.family.name}) has {want}"
        )
    return net.to(pipe.device, pipe.components.unet.dtype)


def _load(pipe, path: Path, name: str) -> torch.nn.Module:
    """A diffusers ControlNet folder, loaded once per pipeline (safetensors only, offline)."""
    from diffusers import ControlNetModel

    cache = pipe.__dict__.setdefault("_control_nets", {})
    key = path.resolve()
    if key not in cache:
        if not (path / "config.json").is_file():
            raise UsageError(f"{name}.model {path} is not a ControlNet folder (it has no config.json)")
        try:
            cache[key] = ControlNetModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise UsageError(
                f"{name}.model {path} cannot be loaded as a ControlNet: {str(e).splitlines()[0]}"
            ) from None
    return cache[key]


def control_image(image, name: str):
    """The unit's control map as an RGB PIL image (a path is read with the usual bounds)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = load_image(image)
    if not isinstance(image, Image.Image):
        raise UsageError(f"{name}.image must be an image file's path or a PIL image")
    return image.convert("RGB")


def control_tensor(image, width: int, height: int) -> torch.Tensor:
    """A control map as diffusers' control image processor prepares it: resized to the output
    size (Lanczos), (1, 3, H, W) in [0, 1]."""
    from PIL import Image

    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    a = np.asarray(image).astype(np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None]
