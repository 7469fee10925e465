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

from latentdiff.sampling.schedulers import SCHEDULERS, method_of, scheduler_key

A1111_SAMPLERS = {k: m.a1111 for k, m in SCHEDULERS.items()}  # our names -> A1111's
# A1111 >= 1.9 writes the noise schedule separately: "Sampler: DPM++ 2M, Schedule type: Karras".
_SCHEDULE_SUFFIX = {"karras": " Karras", "automatic": "", "": ""}
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
NETWORK_TAG = re.compile(r"<(lora|lyco|hypernet):([^:>]+)(?::([^>]*))?>")


def sampler_name(key: str | None, scheduler_config: dict) -> str:
    """The A1111 name of scheduler `key`, or (None) of the model's own scheduler config."""
    key = key if key is not None else method_of(scheduler_config)
    return A1111_SAMPLERS[key] if key is not None else scheduler_config.get("_class_name", "PNDMScheduler")


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


def _lora_tags(prompt: str, loras: list[dict]) -> str:
    """The prompt as A1111 writes it: each LoRA as a `<lora:NAME:SCALE>` tag (NAME: its file's stem,
    what A1111 calls it in models/Lora), so A1111 applies it with its scale when it reads the line."""
    tags = [f"<lora:{x['name']}:{x['scale']:g}>" for x in loras if f"<lora:{x['name']}:" not in prompt]
    return " ".join([prompt, *tags]) if tags else prompt


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
        "CFG scale": p["guidance"],
        "Seed": p["seed"],
        "Size": f"{p['width']}x{p['height']}",
        "Model hash": p.get("model_hash"),
        "Model": _model_name(p.get("base_model") or p.get("model")),
        "VAE": p.get("vae"),
        **_hires_fields(p),
        "Clip skip": p.get("clip_skip") if (p.get("clip_skip") or 1) > 1 else None,
        "Lora hashes": ", ".join(f"{x['name']}: {x['hash']}" for x in loras) or None,
        "TI hashes": ", ".join(f"{x['token']}: {x['hash']}" for x in p.get("embeddings") or []) or None,
    }
    line = ", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v is not None)
    return f"{_lora_tags(p['prompt'], loras)}{neg}\n{line}"


def parse_infotext(text: str) -> tuple[str, str, dict]:
    """(prompt, negative prompt, {field: value}) of an A1111 parameters text, as A1111 reads it."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # no parameters line: all of it is prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    fields = {}
    for key, value in _PARAM.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        fields[key.strip()] = value.strip()
    return "\n".join(prompt), "\n".join(negative), fields


def params_from_a1111(text: str) -> tuple[dict, list[str]]:
    """Our generation parameters from an A1111 PNG's text, and notes for the user about what
    does not carry over (always: A1111 drew its noise on the GPU, so pixels differ)."""
    prompt, negative, f = parse_infotext(text)
    notes = [
        "this image was made by AUTOMATIC1111, whose seeds drew their noise on the GPU: the same "
        "parameters give different pixels here"
    ]
    params: dict = {"prompt": prompt, "negative_prompt": negative, "prompt_syntax": "a1111"}
    for ours, theirs, kind in (
        ("steps", "Steps", int),
        ("guidance", "CFG scale", float),
        ("seed", "Seed", int),
        ("clip_skip", "Clip skip", int),
    ):
        if theirs in f:
            try:
                params[ours] = kind(float(f[theirs])) if kind is int else kind(f[theirs])
            except ValueError:
                notes.append(f"ignored {theirs}: {f[theirs]!r} (not a number)")
    size = _SIZE.match(f.get("Size", ""))
    if size:
        params["width"], params["height"] = int(size.group(1)), int(size.group(2))
    sampler = f.get("Sampler")
    if sampler:
        name = sampler + _SCHEDULE_SUFFIX.get(f.get("Schedule type", "").lower(), " " + f.get("Schedule type", ""))
        params["scheduler"] = scheduler_key(name)
        if params["scheduler"] is None:
            notes.append(f"A1111 sampler {name!r} has no equivalent here; using the model's own scheduler")
    tags = NETWORK_TAG.findall(prompt)
    if tags:
        params["prompt"] = NETWORK_TAG.sub("", prompt).strip()
        notes.append(
            "removed from the prompt: "
            + ", ".join(f"<{k}:{n}>" for k, n, _ in tags)
            + "; pass the files with --lora "
            + " --lora ".join(f"{n}.safetensors:{w or 1}" for _, n, w in tags)
        )
    if f.get("Model"):
        notes.append(f"it used model {f['Model']!r} (hash {f.get('Model hash', '?')}); pass --model to choose one")
    return params, notes
