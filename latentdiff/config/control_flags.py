"""`generate`'s control flags (`--control IMAGE:MODEL[:WEIGHT[:START:END]]`, `--control-module`,
`--control-res`, `--control-resize`) read into one plain record per unit, and the preprocessors'
names and parameters as the A1111 ControlNet extension defines them (their functions are in
images/preprocess.py). Standard library only: this loads at `--help` time.

How a `--control` value is split (paths may hold ':'): from the right, a last field that is a
number is WEIGHT, and three such fields are WEIGHT:START:END (two are refused as ambiguous). What
is left is IMAGE:MODEL, split at the first ':' whose left side is an existing file (else at the
first ':'), so `shots/a:b.png:models/cn` works while the files exist.

Per-unit flags (`--control-module`, `--control-res`, `--control-resize`) are given once (every
unit) or once per `--control`, in the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from latentdiff.config.flag_types import number, shown
from latentdiff.config.flags import Flag
from latentdiff.errors import UsageError

MODES = ("balanced", "prompt", "control", "guess")
RESIZE_MODES = ("crop", "fit", "stretch")
MAX_WEIGHT = 2.0  # the extension's own bound (ControlNetUnit.weight: 0..2)


@dataclass(frozen=True)
class Param:
    """One slider of a preprocessor, as the extension declares it (label, default, range)."""

    label: str
    default: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Module:
    """A preprocessor: its A1111 name and label, whether it works at the processor resolution
    (`res`: the extension's slider, 64..2048, default 512; `fixed`: a resolution it always uses)
    and its threshold sliders A and B (None: unused; the extension then records 0.5)."""

    name: str
    label: str = ""
    res: bool = True
    a: Param | None = None
    b: Param | None = None
    fixed: int | None = None


RES = Param("Resolution", 512, 64, 2048)
UNUSED = 0.5  # an invisible slider's value in the extension (PreprocessorParameter's default)
# The extension's sliders: scripts/preprocessor/model_free_preprocessors.py (none, canny, invert,
# blur_gaussian, scribble_xdog, shuffle) and scripts/preprocessor/legacy/preprocessor_compiled.py.
MODULES = {
    m.name: m
    for m in (
        Module("none", res=False),
        Module("invert", "invert (from white bg & black line)", res=False),
        Module("canny", a=Param("Low Threshold", 100, 1, 255), b=Param("High Threshold", 200, 1, 255)),
        Module("threshold", a=Param("Binarization Threshold", 127, 0, 255)),
        Module("scribble_xdog", a=Param("XDoG Threshold", 32, 1, 64)),
        Module("tile_resample", res=False, a=Param("Down Sampling Rate", 1.0, 1.0, 8.0)),
        Module("lineart_standard", "lineart_standard (from white bg & black line)"),
        Module("shuffle", res=False, fixed=512),
        Module("blur_gaussian", a=Param("Sigma", 9.0, 0.01, 64.0)),
        Module("recolor_luminance", res=False, a=Param("Gamma Correction", 1.0, 0.1, 2.0)),
        Module("recolor_intensity", res=False, a=Param("Gamma Correction", 1.0, 0.1, 2.0)),
    )
}
_BY_LABEL = {m.label: m for m in MODULES.values() if m.label}
# The extension's preprocessors that run a network: their weights are the user's (see the docs).
WEIGHTED = (
    "depth",
    "openpose",
    "lineart_",
    "softedge",
    "hed",
    "pidi",
    "mlsd",
    "normal",
    "seg",
    "mediapipe",
    "dw_",
    "anime",
    "teed",
    "scribble_hed",
    "scribble_pidinet",
    "lineart",
    "ip-adapter",
    "clip",
    "inpaint",
    "reference",
    "densepose",
)


def module(name: str, what: str = "--control-module") -> Module:
    """The preprocessor called `name` (its A1111 name or label)."""
    found = MODULES.get(name) or _BY_LABEL.get(name)
    if found is not None:
        return found
    if any(name.startswith(w) for w in WEIGHTED):
        raise UsageError(
            f"{what} {shown(name)!r} runs a network whose weights latentdiff does not ship: make the map "
            "with the annotator you have and pass it with --control-module none"
        )
    raise UsageError(f"{what} must be one of {', '.join(MODULES)}, got {shown(name)!r}")


def thresholds(m: Module, a, b, what: str) -> tuple[float, float]:
    """(A, B) for `m`: None or -1 (the extension's "default") is the slider's default; an unused
    slider is recorded as the extension records it."""
    out = []
    for letter, p, v in (("A", m.a, a), ("B", m.b, b)):
        if p is None or v is None or v == -1:
            out.append(float(UNUSED if p is None else p.default))
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not p.lo <= v <= p.hi:
            raise UsageError(f"{what} threshold {letter} of {m.name} ({p.label}) must be {p.lo:g}..{p.hi:g}, got {v!r}")
        out.append(float(v))
    return out[0], out[1]


def resolution(m: Module, res, what: str) -> int:
    """The processor resolution `m` runs at (None or -1: 512, the extension's default)."""
    if m.fixed is not None:
        return m.fixed
    if res is None or res == -1:
        return int(RES.default)
    if isinstance(res, bool) or not isinstance(res, int) or not RES.lo <= res <= RES.hi:
        raise UsageError(f"{what} must be a whole number of pixels from {RES.lo} to {RES.hi}, got {res!r}")
    return res


def numbers_from_right(text: str, keep: int, most: int) -> tuple[str, list]:
    """(what is left, the numbers) of a ':'-separated flag value whose last fields (at most `most`,
    leaving at least `keep` fields) are numbers: paths before them may hold ':'."""
    parts = text.split(":")
    numbers = []
    while len(parts) > keep and len(numbers) < most and number(parts[-1]) is not None:
        numbers.insert(0, number(parts.pop()))
    return ":".join(parts), numbers


def beside(path: str, source: str) -> str:
    """`path` where it is, else the file of that name beside the image `source` (replaying an image
    moved with its inputs), else `path`."""
    near = os.path.join(os.path.dirname(os.path.abspath(source)), os.path.basename(path))
    return near if not os.path.isfile(path) and os.path.isfile(near) else path


def split_spec(text: str, what: str = "--control") -> dict:
    """`IMAGE:MODEL[:WEIGHT[:START:END]]` as {"image", "model", "weight", "start", "end"} (numbers
    left out are None)."""
    rest, numbers = numbers_from_right(text, 2, 3)
    if len(numbers) == 2:
        raise UsageError(f"{what} {shown(text)!r}: give WEIGHT or WEIGHT:START:END after IMAGE:MODEL, not two numbers")
    cut = next((i for i, c in enumerate(rest) if c == ":" and os.path.isfile(rest[:i])), rest.find(":"))
    if cut <= 0 or cut == len(rest) - 1:
        raise UsageError(f"{what} must be IMAGE:MODEL[:WEIGHT[:START:END]], got {shown(text)!r}")
    weight, start, end = (numbers + [None, None, None])[:3]
    return {"image": rest[:cut], "model": rest[cut + 1 :], "weight": weight, "start": start, "end": end}


def split_module(text: str) -> dict:
    """`NAME[:A[:B]]` as {"module", "threshold_a", "threshold_b"}."""
    name, *rest = text.split(":")
    if len(rest) > 2:
        raise UsageError(f"--control-module must be NAME[:THRESHOLD_A[:THRESHOLD_B]], got {shown(text)!r}")
    values = [number(v) for v in rest]
    if any(v is None for v in values):
        raise UsageError(f"--control-module thresholds must be numbers, got {shown(text)!r}")
    values += [None] * (2 - len(values))
    return {"module": name, "threshold_a": values[0], "threshold_b": values[1]}


def per_unit(values: list, n: int, flag: str) -> list:
    """A per-unit flag's values for `n` units: none, one for all, or one each."""
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise UsageError(f"{flag} is given {len(values)} times for {n} --control units: give it once, or once per unit")
    return list(values)


def units(controls: list[str], options: dict) -> list[dict]:
    """Every unit of `generate`'s --control flags as a record (image, model, weight, start, end,
    module, threshold_a, threshold_b, processor_res, resize, image_hash), checked; `options` holds
    the per-unit flags' lists and, from --from, the recorded units (`recorded`) that fill what the
    flags leave out."""
    n = len(controls)
    if n > 8:
        raise UsageError(f"{n} --control units given; at most 8 are supported")
    if not n and any(options.get(k) for k in ("modules", "res", "resize")):
        raise UsageError("--control-module, --control-res and --control-resize need --control IMAGE:MODEL")
    recorded = options.get("recorded") or []
    mods = per_unit(options.get("modules") or [], n, "--control-module")
    res = per_unit(options.get("res") or [], n, "--control-res")
    resize = per_unit(options.get("resize") or [], n, "--control-resize")
    out = []
    for k, text in enumerate(controls):
        rec = recorded[k] if k < len(recorded) else {}
        unit = {**rec, **{key: v for key, v in split_spec(text).items() if v is not None}}
        if mods[k] is not None:
            unit.update(split_module(mods[k]))
        if res[k] is not None:
            unit["processor_res"] = res[k]
        if resize[k] is not None:
            unit["resize"] = resize[k]
        if text != rec.get("spec"):  # a new image: the recorded hash says nothing about it
            unit.pop("image_hash", None)
        out.append(checked(unit, f"--control {k + 1}"))
    return out


def checked(unit: dict, what: str) -> dict:
    """A unit record with its defaults filled in and every value in range."""
    m = module(unit.get("module") or "none", f"{what}: module")
    a, b = thresholds(m, unit.get("threshold_a"), unit.get("threshold_b"), what)
    out = {
        "image": unit["image"],
        "model": unit["model"],
        "module": m.name,
        "threshold_a": a,
        "threshold_b": b,
        "processor_res": resolution(m, unit.get("processor_res"), f"{what}: processor resolution (--control-res)"),
        "resize": unit.get("resize") or "crop",
        "image_hash": unit.get("image_hash"),
    }
    for name, default, hi in (("weight", 1.0, MAX_WEIGHT), ("start", 0.0, 1.0), ("end", 1.0, 1.0)):
        v = unit.get(name)
        v = default if v is None else v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
            raise UsageError(f"{what}: {name} must be a number from 0 to {hi:g}, got {shown(str(v))}")
        out[name] = float(v)
    if out["start"] >= out["end"]:
        raise UsageError(f"{what}: start ({out['start']:g}) must be below end ({out['end']:g})")
    if out["resize"] not in RESIZE_MODES:
        raise UsageError(f"{what}: resize must be one of {', '.join(RESIZE_MODES)}, got {shown(str(out['resize']))!r}")
    return out


_GROUP = "control the picture (ControlNet, T2I-Adapter)"
CONTROL_FLAGS = (
    Flag(
        "--control-module",
        "preprocess the control image first (A1111's names: " + ", ".join(MODULES) + "; default none: the image "
        "is the map); THRESHOLD_A/B as A1111's sliders (canny: low/high, default 100/200). Once for all "
        "units or once per --control",
        dict(dest="control_modules", action="append", metavar="NAME[:A[:B]]"),
        _GROUP,
    ),
    Flag(
        "--control-res",
        f"the preprocessor's resolution: the short side it works at ({RES.lo}..{RES.hi}, default 512, as A1111); "
        "once for all units or once per --control",
        dict(dest="control_res", action="append", type=int, metavar="PX"),
        _GROUP,
    ),
    Flag(
        "--control-resize",
        "how the map reaches the image size: crop (A1111's Crop and Resize, default), fit (Resize and Fill), "
        "stretch (Just Resize); once for all units or once per --control",
        dict(dest="control_resize", action="append", choices=list(RESIZE_MODES)),
        _GROUP,
    ),
)


def replay_specs(records, source: str) -> list[str]:
    """The --control values that replay the units an image recorded (each record gets its value as
    "spec", so that its image hash is checked): the control picture at its recorded path, else the
    file of that name beside the image; the model at its recorded path."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UsageError(f"the controls recorded in {source} must be a list of units, got {shown(repr(records))}")
    specs = []
    for k, r in enumerate(records):
        image, model = r.get("image"), r.get("model")
        if not isinstance(image, str) or not isinstance(model, str) or not image or not model:
            name = f"{r.get('model_name')} [{r.get('a1111_hash') or '?'}]"
            raise UsageError(
                f"{source} used ControlNet {k} ({shown(name)}) but does not record its control image and model; "
                "give --control IMAGE:MODEL for each unit"
            )
        image = beside(image, source)
        for what, path in (("control image", image), ("ControlNet model", model)):
            if not os.path.exists(path):
                raise UsageError(
                    f"the {what} recorded in {source}, {shown(path, 200)}, is missing"
                    + (" (nor is it beside the image)" if what == "control image" else "")
                    + "; give --control IMAGE:MODEL again"
                )
        r["spec"] = f"{image}:{model}:{r.get('weight')}:{r.get('start')}:{r.get('end')}"
        specs.append(r["spec"])
    return specs
