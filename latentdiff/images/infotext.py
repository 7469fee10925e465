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

from latentdiff.config.upscalers import LATENT_UPSCALERS, MODEL_SUFFIXES, PIXEL_UPSCALERS, model_label
from latentdiff.images.a1111_read import NETWORK_TAG, hires_denoised, params_from_a1111  # noqa: F401 (re-exported)
from latentdiff.images.control_infotext import controlnet_fields
from latentdiff.images.infotext_parse import parse_infotext  # noqa: F401 (re-exported)
from latentdiff.images.noise_infotext import noise_fields
from latentdiff.sampling.schedulers import SCHEDULERS, a1111_names
from latentdiff.sampling.unipc_settings import LABELS as UNIPC_LABELS

A1111_SAMPLERS = {k: m.a1111 for k, m in SCHEDULERS.items()}  # our names -> A1111's


def sampler_name(key: str | None, scheduler_config: dict) -> str:
    """The A1111 sampler name of choice `key`, or (None) of the model's own scheduler config."""
    return a1111_names(key, scheduler_config)[0]


def schedule_type(key: str | None, scheduler_config: dict) -> str | None:
    """The A1111 "Schedule type" of choice `key` (None: the model's own), where one is written."""
    return a1111_names(key, scheduler_config)[1]


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


def _file_name(ref) -> str | None:
    """A1111 names a VAE by its file's name with the extension (sd_vae.get_loaded_vae_name)."""
    from pathlib import PurePath

    return PurePath(str(ref)).name if ref else None


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
        **UNIPC_LABELS,  # A1111's UniPC settings under their infotext names, which it reads back
    }


REFINER_PASS = {"first": "first pass", "both": "both passes"}  # A1111's hires_fix_refiner_pass values
LABELS = {**PIXEL_UPSCALERS, **{k: v[0] for k, v in LATENT_UPSCALERS.items()}}  # hires upscalers
MASKED_CONTENT = {"fill": "fill", "latent_noise": "latent noise", "latent_nothing": "latent nothing"}


def _hires_fields(p: dict) -> dict:
    """A1111's names for img2img's strength (with a mask, its blur and inpaint area) and the hires fix."""
    if not p.get("hires"):
        masked = p.get("inpaint_area") == "masked"
        return {
            "Denoising strength": p.get("strength"),
            "Mask blur": p.get("mask_blur") if p.get("mask") else None,
            "Inpaint area": "Only masked" if masked else None,
            "Masked area padding": p.get("padding") if masked else None,
            "Masked content": MASKED_CONTENT.get(p.get("masked_content")),  # recorded with a mask only
        }
    upscaler = p.get("hires_upscaler") or "latent"
    strength = p.get("hires_strength") or 0.5
    return {
        "Denoising strength": strength,
        "Hires upscale": f"{p['hires']:g}",
        # A1111's "Hires steps" are the steps its hires pass denoises, all of them (on a schedule of
        # steps / strength); ours denoises int(steps * strength) of a schedule of hires_steps.
        "Hires steps": hires_denoised(p.get("hires_steps") or p["steps"], strength),
        "Hires upscaler": LABELS.get(upscaler) or _upscaler_name(upscaler),
        # A1111 names where its refiner took over when not in the hires pass alone (its default)
        "Hires refiner": REFINER_PASS.get(p.get("hires_refiner_pass")) if p.get("refiner") else None,
    }


def _upscaler_name(ref: str) -> str | None:
    """An upscaler model file as A1111 names it ("R-ESRGAN 4x+" for RealESRGAN_x4plus.pth); a diffusion
    upscaler model as A1111 names models."""
    return model_label(ref) if ref.lower().endswith(MODEL_SUFFIXES) else _model_name(ref)


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
        # A1111's VAE: its file's name and the first 10 hex digits of its sha256
        "VAE hash": p.get("vae_hash"),
        "VAE": _file_name(p.get("vae")),
        **noise_fields(p),
        **_hires_fields(p),
        "Refiner": _model_name(p.get("refiner")),  # A1111's SDXL refiner and where it took over
        "Refiner switch at": p.get("refiner_start") if p.get("refiner") else None,
        "Clip skip": p.get("clip_skip") if (p.get("clip_skip") or 1) > 1 else None,
        "Lora hashes": ", ".join(f"{x['name']}: {x['hash']}" for x in loras + list(p.get("tag_loras") or [])) or None,
        "TI hashes": ", ".join(f"{x['token']}: {x['hash']}" for x in p.get("embeddings") or []) or None,
        **controlnet_fields(p),
    }
    line = ", ".join(f"{k}: {quote(v)}" for k, v in fields.items() if v is not None)
    return f"{_lora_tags(p['prompt'], loras)}{neg}\n{line}"
