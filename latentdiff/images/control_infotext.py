"""ControlNet units in A1111's parameters line, as its ControlNet extension writes and reads them:

    ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and
    Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0,
    Pixel Perfect: False, Control Mode: Balanced"

The keys are the extension's unit fields in its order (module, model, weight, resize_mode,
processor_res, threshold_a, threshold_b, guidance_start, guidance_end, pixel_perfect, control_mode),
each word capitalised; the values as Python prints them; the model as its file name without the
extension and A1111's short hash in brackets. The whole unit is one JSON-quoted value of the line.
"""

from __future__ import annotations

import re

from latentdiff.config.flag_types import number, shown

RESIZE_NAMES = {"crop": "Crop and Resize", "fit": "Resize and Fill", "stretch": "Just Resize"}
# "guess" (diffusers' guess mode) is not one of the extension's modes: written as itself, A1111 skips the unit
MODE_NAMES = {
    "balanced": "Balanced",
    "prompt": "My prompt is more important",
    "control": "ControlNet is more important",
    "guess": "Guess Mode",
}
# the extension's older resize names, which it still reads (internal_controlnet/args.py)
_RESIZE_ALIASES = {
    "Inner Fit (Scale to Fit)": "crop",
    "Scale to Fit (Inner Fit)": "crop",
    "Outer Fit (Shrink to Fit)": "fit",
    "Envelope (Outer Fit)": "fit",
}
_MODEL = re.compile(r"(.*?)(?: \[([0-9a-fA-F]{8,10})\])?")
IP_ADAPTER_PREFIX, IP_ADAPTER = "ip-adapter", "ip-adapter_clip_sd15"  # the extension's IP-Adapter modules
MAX_UNIT_CHARS = 4096  # a unit's text; far more than its eleven short fields take


def _plain(text) -> str:
    """A name as the extension can write it: it refuses a value holding ',' or ':'."""
    return str(text).replace(",", "_").replace(":", "_")


def unit_text(rec: dict) -> str:
    """One recorded unit (workflows/control.py's record) as the extension's infotext value."""
    name = _plain(rec.get("model_name") or "None")
    model = f"{name} [{rec['a1111_hash']}]" if rec.get("a1111_hash") else name
    fields = {
        "Module": _plain(rec.get("module", "none")),
        "Model": model,
        "Weight": float(rec.get("weight", 1.0)),
        "Resize Mode": RESIZE_NAMES.get(rec.get("resize"), "Crop and Resize"),
        "Processor Res": int(rec.get("processor_res", 512)),
        "Threshold A": float(rec.get("threshold_a", 0.5)),
        "Threshold B": float(rec.get("threshold_b", 0.5)),
        "Guidance Start": float(rec.get("start", 0.0)),
        "Guidance End": float(rec.get("end", 1.0)),
        "Pixel Perfect": False,
        "Control Mode": MODE_NAMES.get(rec.get("mode"), "Balanced"),
    }
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def controlnet_fields(p: dict) -> dict:
    """{"ControlNet 0": unit text, ...} for an image's recorded units, then its IP-Adapter image
    prompts numbered on, as the extension writes an IP-Adapter unit (its ip-adapter_* module)."""
    units = [u for u in p.get("controls") or [] if isinstance(u, dict)]
    units += [_as_unit(r) for r in p.get("image_prompts") or [] if isinstance(r, dict)]
    return {f"ControlNet {k}": unit_text(u) for k, u in enumerate(units)}


def _as_unit(rec: dict) -> dict:
    """An image prompt's record (workflows/image_prompt_record.py) as a unit record."""
    return {
        "module": rec.get("module") or IP_ADAPTER,
        "model_name": rec.get("adapter_name"),
        "a1111_hash": rec.get("a1111_hash"),
        "weight": rec.get("scale", 1.0),
    }


def _as_image_prompt(unit: dict) -> dict:
    """An A1111 IP-Adapter unit as an image prompt's record (no picture: A1111 does not store it)."""
    names = {"scale": "weight", "adapter_name": "model_name", "a1111_hash": "a1111_hash", "module": "module"}
    return {ours: unit[theirs] for ours, theirs in names.items()}


def _value(text: str):
    """A value as the extension parses it: True/False, an int, a float, else the text."""
    if text in ("True", "False"):
        return text == "True"
    value = number(text)
    return shown(text) if value is None else value


def parse_unit(text: str) -> dict | None:
    """A unit record (module, model_name, a1111_hash, weight, resize, processor_res, threshold_a/b,
    start, end, mode) from the extension's text, or None where it is not one (the extension splits
    on ',' and then on ': ', as here: linear in the text)."""
    if len(text) > MAX_UNIT_CHARS:
        return None
    raw = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if not sep or ": " in value:
            return None
        raw[key.strip().lower().replace(" ", "_")] = value
    if "module" not in raw or "model" not in raw:
        return None
    name, short = _MODEL.fullmatch(raw["model"]).groups()
    modes = {v: k for k, v in MODE_NAMES.items()}
    resizes = {**{v: k for k, v in RESIZE_NAMES.items()}, **_RESIZE_ALIASES}
    rec = {"module": raw["module"], "model_name": name, "a1111_hash": short}
    for ours, theirs in (("weight", "weight"), ("start", "guidance_start"), ("end", "guidance_end")):
        rec[ours] = _value(raw[theirs]) if theirs in raw else None
    for key in ("processor_res", "threshold_a", "threshold_b"):
        rec[key] = _value(raw[key]) if key in raw else None
    rec["resize"] = resizes.get(raw.get("resize_mode", "Crop and Resize"), shown(raw.get("resize_mode", "")))
    rec["mode"] = modes.get(raw.get("control_mode", "Balanced"), shown(raw.get("control_mode", "")))
    return rec


def units_from_fields(fields: dict) -> tuple[list[dict], list[dict], list[str]]:
    """(the unit records, the image prompts' records, notes) of an A1111 line's "ControlNet N"
    fields, in N's order: a unit whose module is an ip-adapter_* one is an image prompt."""
    found, notes = {}, []
    for key, value in fields.items():
        m = re.fullmatch(r"ControlNet (\d{1,2})", key)
        if m:
            rec = parse_unit(value)
            if rec is None:
                notes.append(f"ignored {key}: {shown(value)!r} (not the ControlNet extension's unit form)")
            else:
                found[int(m.group(1))] = rec
    ordered = [found[k] for k in sorted(found)]
    units = [u for u in ordered if not str(u["module"]).startswith(IP_ADAPTER_PREFIX)]
    prompts = [_as_image_prompt(u) for u in ordered if str(u["module"]).startswith(IP_ADAPTER_PREFIX)]
    if prompts:
        names = ", ".join(f"{p['adapter_name']} [{p['a1111_hash'] or '?'}]" for p in prompts)
        notes.append(
            f"it used IP-Adapter {names}: A1111 does not store image prompts; give --image-prompt IMG for each "
            "and --ip-adapter FILE (the line's weight is the scale unless flags say otherwise)"
        )
    if units:
        names = ", ".join(f"{u['model_name']} [{u['a1111_hash'] or '?'}] ({u['module']})" for u in units)
        notes.append(
            f"it used ControlNet {names}: A1111 does not store control images; give --control IMAGE:MODEL "
            "for each unit (the line's module, weight, steps and resize are used unless flags say otherwise)"
        )
    return units, prompts, notes
