"""Control units before the loop: each unit's model loaded once, its control image read, checked
and brought to the output size, its weight and step range checked; in the loop each becomes a
`Residuals` of the model call (families/control.py).

Control modes (families/control.py): A1111's "balanced", "prompt" (My prompt is more important)
and "control" (ControlNet is more important), and diffusers' "guess" mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentdiff.config.control_flags import MODES, module, resolution, thresholds
from latentdiff.errors import ModelError, UsageError
from latentdiff.families.control import AdapterResiduals, ControlNetResiduals, adapter_features, check_adapter_fits
from latentdiff.formats.control_files import (
    ControlFile,
    detect_control,
    load_control_file,
    misfit,
    net_facts,
    read_control,
)
from latentdiff.images.preprocess import preprocess
from latentdiff.models.fingerprint import control_hashes
from latentdiff.runtime.memory import check_fits
from latentdiff.runtime.reading import check_regular
from latentdiff.workflows.source import RESIZE_MODES, pixel_hash, read_picture, resize_to

MAX_UNITS = 8
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


@dataclass(frozen=True)
class Control:
    """One control unit as a caller gives it: `image` a path or PIL image (an already processed
    map: edges, depth, pose...), `model` a ControlNet or T2I-Adapter (a diffusers folder, a single
    file as the A1111 extension and ComfyUI use, or a loaded diffusers model), `weight` its
    conditioning scale, active from fraction `start` to `end` of the steps. A pickle file is read
    only with `allow_pickle` here or on `Pipeline.from_pretrained` (weights_only).
    `module` makes the map from a picture first (images/preprocess.py: canny, lineart_standard, ...,
    A1111's names) at `processor_res` with thresholds `threshold_a`/`threshold_b` (None: A1111's
    defaults); "none" takes the image as the map."""

    image: Any
    model: Any
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    resize: str = "crop"  # A1111's resize modes: crop (Crop and Resize), fit (Resize and Fill), stretch (Just Resize)
    module: str = "none"
    processor_res: int | None = None
    threshold_a: float | None = None
    threshold_b: float | None = None
    allow_pickle: bool = False  # a pickle file (.pth/.bin/.ckpt) as `model`, read weights_only


@dataclass(frozen=True)
class Unit:
    """A checked unit: its network and its control image (RGB)."""

    net: torch.nn.Module
    image: Any  # PIL RGB
    weight: float
    start: float
    end: float
    mode: str
    resize: str
    record: dict = field(default_factory=dict)  # what the image's metadata says of it (images/record.py)
    unet: dict = field(default_factory=dict)  # the base UNet's config, and its latent factor (adapter sizes)
    factor: int = 8

    def residuals(self, total: int, size: tuple[int, int]):
        """This unit for a run of `total` steps at `size` (width, height): the image resized to it."""
        image = resize_to(self.image, size, self.resize)
        if _is_adapter(self.net):
            image = control_tensor(image.convert("L") if self.net.config.in_channels == 1 else image)
            features = adapter_features(self.net, image, self.weight)
            check_adapter_fits(features, self.unet, size[1] // self.factor, size[0] // self.factor)
            return AdapterResiduals(features, self.start, self.end, total)
        return ControlNetResiduals(self.net, control_tensor(image), self.weight, self.start, self.end, total, self.mode)


def control_units(pipe, controls, mode: str, seed: int = 0) -> tuple[Unit, ...]:
    """The units of a call, every one checked before any work (a UsageError names the first bad one);
    `seed` is the call's first seed (the shuffle preprocessor draws its noise from it, as A1111 does)."""
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
    return tuple(_unit(pipe, c, k, mode, seed) for k, c in enumerate(controls))


def _unit(pipe, c: Control, k: int, mode: str, seed: int) -> Unit:
    name = f"controls[{k}]"
    weight, start, end = (_fraction(f"{name}.{n}", v, hi) for n, v, hi in _numbers(c))
    if start >= end:
        raise UsageError(f"{name}: start ({start}) must be below end ({end})")
    if not isinstance(c.allow_pickle, bool):
        raise UsageError(f"{name}.allow_pickle must be True or False, got {c.allow_pickle!r}")
    if c.resize not in RESIZE_MODES:
        raise UsageError(f"{name}.resize must be one of {', '.join(RESIZE_MODES)}, got {c.resize!r}")
    how = _preprocessing(c, name)
    net = _network(pipe, c, name)
    picture, path = _picture(c.image, name)
    record = {
        "image": path,
        "image_hash": pixel_hash(picture),
        **_model_record(c.model),
        **how,
        **{"weight": weight, "start": start, "end": end, "resize": c.resize, "mode": mode},
    }
    image = preprocess(picture, how["module"], how["processor_res"], how["threshold_a"], how["threshold_b"], seed)
    unet = dict(pipe.components.unet.config)
    return Unit(net, image, weight, start, end, mode, c.resize, record, unet, pipe.scale_factor)


def _preprocessing(c: Control, name: str) -> dict:
    """The unit's preprocessor and its settings, A1111's defaults filled in."""
    if not isinstance(c.module, str):
        raise UsageError(f"{name}.module must be a preprocessor's name, got {c.module!r}")
    m = module(c.module, f"{name}.module")
    a, b = thresholds(m, c.threshold_a, c.threshold_b, name)
    res = resolution(m, c.processor_res, f"{name}.processor_res")
    return {"module": m.name, "processor_res": res, "threshold_a": a, "threshold_b": b}


def _model_record(model) -> dict:
    """The unit's model as the metadata names it: path, file name, our hash and A1111's short hash."""
    if not isinstance(model, (str, Path)):
        return {"model": None, "model_name": type(model).__name__, "model_hash": None, "a1111_hash": None}
    path = Path(model)
    full, short = control_hashes(path)
    return {"model": str(path.resolve()), "model_name": path.stem, "model_hash": full, "a1111_hash": short}


def _numbers(c: Control):
    return (("weight", c.weight, 2.0), ("start", c.start, 1.0), ("end", c.end, 1.0))


def _fraction(name: str, value, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
        raise UsageError(f"{name} must be a number from 0 to {hi}, got {value!r}")
    return float(value)


def _network(pipe, c: Control, name: str) -> torch.nn.Module:
    """A loaded ControlNet or T2I-Adapter of `pipe`'s family, on its device and in its dtype."""
    from diffusers import ControlNetModel, T2IAdapter

    if isinstance(c.model, (ControlNetModel, T2IAdapter)):
        net = c.model
    elif isinstance(c.model, (str, Path)):
        net = _load(pipe, Path(c.model), name, bool(c.allow_pickle or pipe.allow_pickle))
    else:
        raise UsageError(f"{name}.model must be a ControlNet or T2I-Adapter folder or file, or such a diffusers model")
    _check_fits(pipe, net_facts(net), name)
    return net.to(pipe.device, pipe.components.unet.dtype)


def _is_adapter(net) -> bool:
    from diffusers import T2IAdapter

    return isinstance(net, T2IAdapter)


def _check_fits(pipe, facts: ControlFile, name: str, where: str = "") -> None:
    """Refuse a unit made for another family than `pipe`'s, naming both."""
    want = misfit(facts, dict(pipe.components.unet.config), pipe.family.name == "sdxl", pipe.scale_factor)
    if want is not None:
        raise UsageError(
            f"{name}.model {where}is {facts.name} for another model family ({facts.size}); "
            f"this model is {pipe.family.label} ({want.size})"
        )


def _load(pipe, path: Path, name: str, allow_pickle: bool) -> torch.nn.Module:
    """A ControlNet or T2I-Adapter folder or file, loaded once per pipeline (offline)."""
    cache = pipe.__dict__.setdefault("_control_nets", {})
    key = path.resolve()
    if key not in cache:
        _check_memory(path, name)
        if path.is_dir():
            cache[key] = _load_folder(path, name)
        elif not path.exists():
            raise UsageError(
                f"{name}.model {path} is not a ControlNet or T2I-Adapter folder or file: it does not exist"
            )
        else:
            check_regular(path, f"{name}.model")  # a FIFO or a device is refused, never opened to block
            cache[key] = _load_file(pipe, path, name, allow_pickle)
    return cache[key]


def _load_file(pipe, path: Path, name: str, allow_pickle: bool) -> torch.nn.Module:
    """A single ControlNet or T2I-Adapter file (formats/control_files.py), refused before its
    weights are read when it is no control or belongs to another family."""
    try:
        shapes, sd = read_control(path, allow_pickle)
        facts = detect_control(shapes, path)
        _check_fits(pipe, facts, name, f"{path} ")
        return load_control_file(path, facts, sd, dict(pipe.components.unet.config), pipe.family.name == "sdxl")
    except ModelError as e:
        raise UsageError(f"{name}.model: {e}") from None


def _check_memory(path: Path, name: str) -> None:
    """Refuse, before reading it, a unit's model whose weights the free memory cannot hold (at least
    their size on disk), naming the figures; units already loaded hold theirs."""
    files = [path] if path.is_file() else [p for p in path.glob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    check_fits(
        sum(f.stat().st_size for f in files), f"{name}.model {path.name}", "use fewer control units, or free memory"
    )


def _load_folder(path: Path, name: str) -> torch.nn.Module:
    """A diffusers ControlNet or T2I-Adapter folder (safetensors only)."""
    from diffusers import ControlNetModel, T2IAdapter

    config = path / "config.json"
    if not config.is_file():
        raise UsageError(f"{name}.model {path} is not a ControlNet or T2I-Adapter folder (it has no config.json)")
    kind = {"ControlNetModel": ControlNetModel, "T2IAdapter": T2IAdapter}.get(_class_name(config))
    if kind is None:
        raise UsageError(
            f"{name}.model {path} holds a {_class_name(config) or 'model'}, not a ControlNet or T2I-Adapter"
        )
    try:
        return kind.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise UsageError(f"{name}.model {path} cannot be loaded: {str(e).splitlines()[0]}") from None


def _class_name(config: Path) -> str:
    import json

    try:
        return str(json.loads(config.read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _picture(image, name: str):
    """(the unit's picture as 8-bit RGB, its absolute path or None): a path is read with the usual bounds."""
    if not isinstance(image, (str, Path)) and not hasattr(image, "convert"):
        raise UsageError(f"{name}.image must be an image file's path or a PIL image")
    return read_picture(image, f"{name}.image")


def control_tensor(image) -> torch.Tensor:
    """A control map sized for its pass as diffusers' control image processor makes it: (1, C, H, W)
    in [0, 1] (C = 1 for a grey map, as 1-channel T2I-Adapters take it)."""
    a = np.asarray(image).astype(np.float32) / 255.0
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def from_records(units: list[dict], what: str = "--control") -> list[Control]:
    """`Control`s from the CLI's checked unit records (config/control_flags.units), their files
    checked first: the picture readable (and, replayed from an image, the one it recorded: the
    same pixel hash), the model present. A UsageError names the first bad one."""
    out = []
    for k, u in enumerate(units):
        name = f"{what} {k + 1}"
        picture, _ = read_picture(u["image"], f"{name}: control image")
        if u.get("image_hash") and pixel_hash(picture) != u["image_hash"]:
            raise UsageError(
                f"{name}: control image {u['image']} is not the one recorded (pixel hash {pixel_hash(picture)}, "
                f"recorded {u['image_hash']}); give --control IMAGE:MODEL to use it anyway"
            )
        if not Path(u["model"]).exists():
            raise UsageError(f"{name}: ControlNet model {u['model']} does not exist")
        keys = ("weight", "start", "end", "resize", "module", "processor_res", "threshold_a", "threshold_b")
        out.append(Control(u["image"], u["model"], **{key: u[key] for key in keys}))
    return out
