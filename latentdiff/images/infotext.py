"""AUTOMATIC1111's "parameters" text (infotext): the A1111 sampler names, writing our
images' line so A1111's PNG Info and civitai read it, and reading lines A1111 wrote.

The line looks like
    a prompt
    Negative prompt: a negative
    Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123456789, ...
Values holding ',', ':' or a newline are JSON-quoted, as A1111 does.
"""

from __future__ import annotations

import json
import re

from latentdiff.config.flag_types import number, shown
from latentdiff.errors import UsageError
from latentdiff.images.control_infotext import controlnet_fields, units_from_fields
from latentdiff.sampling.schedulers import SCHEDULERS, a1111_names, check_scheduler_name

A1111_SAMPLERS = {k: m.a1111 for k, m in SCHEDULERS.items()}  # our names -> A1111's
# A tag's parts are bounded (a file name is at most 255 bytes; a weight, with a block-weight preset
# `1:lbw=1,0,...`, well under 100 characters): unbounded, a prompt of many '<lora:a:' and no '>' made
# every attempt scan to the end, quadratic in its length; bounded, each attempt scans at most ~360.
NETWORK_TAG = re.compile(r"<(lora|lyco|hypernet):([^:>\n]{1,255})(?::([^>\n]{0,100}))?>")


def _number(text: str):
    """An A1111 number as an int or a float (nan and inf included), or else its text, cut short."""
    value = number(text)
    return shown(text.strip()) if value is None else value


def sampler_name(key: str | None, scheduler_config: dict) -> str:
    """The A1111 sampler name of choice `key`, or (None) of the model's own scheduler config."""
    return a1111_names(key, scheduler_config)[0]


def schedule_type(key: str | None, scheduler_config: dict) -> str | None:
    """The A1111 "Schedule type" of choice `key` (None: the model's own), where one is written."""
    return a1111_names(key, scheduler_config)[1]


def _scheduler_from(f: dict, notes: list) -> str | None:
    """Our choice for A1111's Sampler and Schedule type fields (A1111 >= 1.9 writes them apart, older
    versions as one name, "DPM++ 2M Karras"; a missing or "Automatic" schedule is A1111's default)."""
    schedule = f.get("Schedule type")
    schedule = None if (schedule or "").strip().lower() in ("", "automatic") else schedule
    try:
        return check_scheduler_name(f["Sampler"], schedule)
    except UsageError as e:
        notes.append(f"A1111 sampler {f['Sampler']!r}: {e}; using the model's own scheduler")
        return None


def quote(value) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _model_name(ref) -> str | None:
    """A1111 names a model by its file name without extension; a hub id stays as it is."""
    import os
    from pathlib import PurePath

    if not ref:
        return None
    text = str(ref)
    if not os.path.isabs(text):
        return text
    path = PurePath(text)
    return path.stem if path.suffix in (".safetensors", ".ckpt", ".pt", ".bin") else path.name


def _multipliers(lora: dict) -> str:
    """A tag's multipliers: the scale, or A1111's `te:unet` where the text encoder has its own."""
    te = lora.get("te_scale")
    return f"{lora['scale']:g}" if te is None or te == lora["scale"] else f"{te:g}:{lora['scale']:g}"


def _lora_tags(prompt: str, loras: list[dict]) -> str:
    """The prompt as A1111 writes it: each LoRA as a `<lora:NAME:SCALE>` tag (NAME: its file's stem,
    what A1111 calls it in models/Lora), so A1111 applies it with its scale when it reads the line."""
    tags = [f"<lora:{x['name']}:{_multipliers(x)}>" for x in loras if f"<lora:{x['name']}:" not in prompt]
    return " ".join([prompt, *tags]) if tags else prompt


def _option_names(p: dict) -> dict:
    """A1111's infotext names of the sampler options (DDIM's eta is "Eta DDIM")."""
    eta = "Eta DDIM" if (p.get("scheduler") or "").startswith("ddim") else "Eta"
    return {
        "eta": eta,
        "s_churn": "Sigma churn",
        "s_tmin": "Sigma tmin",
        "s_tmax": "Sigma tmax",
        "s_noise": "Sigma noise",
    }


def _hires_fields(p: dict) -> dict:
    """A1111's names for img2img's strength and the hires fix settings."""
    if not p.get("hires"):
        return {"Denoising strength": p.get("strength")}
    upscaler = p.get("hires_upscaler") or "latent"
    return {
        "Denoising strength": p.get("hires_strength"),
        "Hires upscale": f"{p['hires']:g}",
        "Hires steps": p.get("hires_steps"),
        "Hires upscaler": {"latent": "Latent", "lanczos": "Lanczos"}.get(upscaler, _model_name(upscaler)),
    }


def format_infotext(p: dict) -> str:
    """The A1111-style line for a latentdiff image's recorded parameters. A LoRA folder loaded as
    the model (`model_lora`) is written as A1111 would see it: the base model plus the LoRA."""
    neg = f"\nNegative prompt: {p['negative_prompt']}" if p.get("negative_prompt") else ""
    loras = ([p["model_lora"]] if p.get("model_lora") else []) + list(p.get("loras") or [])
    fields = {
        "Steps": p["steps"],
        "Sampler": p.get("sampler") or sampler_name(p.get("scheduler"), {"_class_name": p.get("scheduler_class")}),
        "Schedule type": p.get("schedule_type"),
        **{name: p.get(key) for key, name in _option_names(p).items()},
        # Forge's fields for Flux: the loop's CFG scale (1 without true CFG) and the embedded guidance
        "CFG scale": p.get("true_cfg", 1.0) if p.get("guidance_embedded") else p["guidance"],
        "Distilled CFG Scale": p["guidance"] if p.get("guidance_embedded") else None,
        "Seed": p["seed"],
        "Size": f"{p['width']}x{p['height']}",
        "Model hash": p.get("model_hash"),
        "Model": _model_name(p.get("base_model") or p.get("model")),
        "VAE": p.get("vae"),
        **_hires_fields(p),
        "Clip skip": p.get("clip_skip") if (p.get("clip_skip") or 1) > 1 else None,
        "Lora hashes": ", ".join(f"{x['name']}: {x['hash']}" for x in loras) or None,
        "TI hashes": ", ".join(f"{x['token']}: {x['hash']}" for x in p.get("embeddings") or []) or None,
        **controlnet_fields(p),
    }
    line = ", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v is not None)
    return f"{_lora_tags(p['prompt'], loras)}{neg}\n{line}"


def parse_infotext(text: str) -> tuple[str, str, dict]:
    """(prompt, negative prompt, {field: value}) of an A1111 parameters text, as A1111 reads it
    (its regular expression `\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)`, in one linear
    pass: the expression itself is quadratic in the length of a line without a colon)."""
    *lines, last = text.strip().split("\n")
    pairs = fields_of(last)
    if len(pairs) < 3:  # no parameters line: all of it is prompt
        lines.append(last)
        pairs = []
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    fields = {}
    for key, value in pairs:
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)  # a JSON string: it cannot nest
            except json.JSONDecodeError:
                pass
        fields[key.strip()] = value.strip()
    return "\n".join(prompt), "\n".join(negative), fields


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def fields_of(line: str) -> list[tuple[str, str]]:
    """The `key: value` pairs of A1111's parameters line, found where its expression finds them:
    a key is a word character and then word characters, spaces, '-' or '/' up to a colon; a value
    is a JSON-quoted string followed by ',' or the end, else everything up to the next comma."""
    pairs, i = [], 0
    while True:
        colon = line.find(":", i)
        if colon < 0:
            return pairs
        start = colon  # the key: the run of key characters before the colon, from its first word character
        while start > i and (_is_word(line[start - 1]) or line[start - 1] in " -/"):
            start -= 1
        while start < colon and not _is_word(line[start]):
            start += 1
        if colon - start < 2:
            i = colon + 1
            continue
        value_start = colon + 1
        while value_start < len(line) and line[value_start].isspace():
            value_start += 1
        end = _quoted_end(line, value_start)
        if end is None:
            end = line.find(",", value_start)
            end = len(line) if end < 0 else end
        pairs.append((line[start:colon], line[value_start:end]))
        i = end + 1


def _quoted_end(line: str, at: int) -> int | None:
    """Where a JSON-quoted value starting at `at` ends (its closing quote + 1), when a comma or the
    end of the line follows it; else None. The scan stops at the first unescaped quote, so no
    character is scanned twice by successive calls."""
    if at >= len(line) or line[at] != '"':
        return None
    j = at + 1
    while j < len(line) and line[j] != '"':
        j += 2 if line[j] == "\\" else 1
    if j >= len(line) or j == at + 1 or (j + 1 < len(line) and line[j + 1] != ","):
        return None
    return j + 1


def params_from_a1111(text: str, source: str = "the image") -> tuple[dict, list[str]]:
    """Our generation parameters from an A1111 PNG's text, and notes for the user about what
    does not carry over (always: A1111 drew its noise on the GPU, so pixels differ). Its numbers
    are passed on as written (nan, inf, 1e400 too) for the parameter checks to refuse, naming them;
    text that is no number is passed on cut short, to be refused the same way."""
    prompt, negative, f = parse_infotext(text)
    notes = [
        "this image was made by AUTOMATIC1111, whose seeds drew their noise on the GPU: the same "
        "parameters give different pixels here"
    ]
    params: dict = {"prompt": prompt, "negative_prompt": negative, "prompt_syntax": "a1111"}
    for ours, theirs in (("steps", "Steps"), ("guidance", "CFG scale"), ("seed", "Seed"), ("clip_skip", "Clip skip")):
        if theirs in f:
            params[ours] = _number(f[theirs])
    if "Distilled CFG Scale" in f:  # Forge's Flux line: its CFG scale is the true CFG
        params["true_cfg"] = params.pop("guidance", 1.0)
        params["guidance"] = _number(f["Distilled CFG Scale"])
    if "Size" in f:
        width, x, height = f["Size"].partition("x")
        if x:
            params["width"], params["height"] = _number(width), _number(height)
        else:
            notes.append(f"ignored Size: {shown(f['Size'])!r} in {source} (not WIDTHxHEIGHT)")
    if f.get("Sampler") and "Distilled CFG Scale" in f:  # Forge's Flux: the model's own flow-matching Euler
        params["scheduler"] = None
        if (f["Sampler"].strip().lower(), f.get("Schedule type", "simple").strip().lower()) != ("euler", "simple"):
            notes.append(f"Forge's Flux sampler {shown(f['Sampler'])!r}: using the model's own flow-matching Euler")
    elif f.get("Sampler"):
        params["scheduler"] = _scheduler_from(f, notes)
    tags = NETWORK_TAG.findall(prompt)
    if tags:
        params["prompt"] = NETWORK_TAG.sub("", prompt).strip()
        notes.append(
            "removed from the prompt: "
            + ", ".join(f"<{k}:{n}>" for k, n, _ in tags)
            + "; pass the files with --lora "
            + " --lora ".join(f"{n}.safetensors:{w or 1}" for _, n, w in tags)
        )
    units, prompts, unit_notes = units_from_fields(f)
    if units:
        params["controls"], params["control_mode"] = units, units[0]["mode"]
    if prompts:
        params["image_prompts"] = prompts
    notes += unit_notes
    if f.get("Model"):
        notes.append(f"it used model {f['Model']!r} (hash {f.get('Model hash', '?')}); pass --model to choose one")
    return params, notes
