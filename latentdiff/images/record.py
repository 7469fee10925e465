"""What every image records about how it was made (PNG metadata, `--from`, the A1111 line)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from latentdiff.images.infotext import sampler_name, schedule_type
from latentdiff.models.fingerprint import model_hash, versions
from latentdiff.runtime.device import DTYPE_NAMES


def record(pipe, request, prompt: str, seed: int) -> dict:
    """The parameters of one image of `pipe` (`request`: its config.request.Request), with the
    model, add-ons and versions."""
    return {
        "prompt": prompt,
        "negative_prompt": request.negative_prompt,
        "seed": seed,
        "steps": request.steps,
        "guidance": request.guidance,
        **_guidance(pipe, request),
        "scheduler": request.scheduler,
        "clip_skip": request.clip_skip,
        "prompt_syntax": request.prompt_syntax,
        "loras": pipe.addons.loras,
        **({"lora_dir": str(pipe.lora_dir)} if pipe.lora_dir is not None else {}),
        "embeddings": pipe.addons.embeddings,
        "scheduler_class": pipe.components.scheduler_config.get("_class_name"),
        "sampler": sampler_name(request.scheduler, pipe.components.scheduler_config),
        "schedule_type": schedule_type(request.scheduler, pipe.components.scheduler_config),
        **dict(request.sampler_options),
        **(request.a1111.record(request.seed, seed) if getattr(request, "a1111", None) else {}),
        "width": request.width,
        "height": request.height,
        "model": pipe.model_ref,
        "model_hash": pipe.model_hash,
        **_refiner(pipe),
        **_vae(pipe),
        **getattr(pipe, "parts", {}),  # a transformer file's --components and --text-encoder files
        "dtype": DTYPE_NAMES.get(pipe.dtype),
        "device": str(pipe.device),
        **_speed(pipe),
        "versions": versions(),
        **_model_lora(pipe),
        **_controls(request),
        **(request.unclip.record() if getattr(request, "unclip", None) is not None else {}),
    }


def _speed(pipe) -> dict:
    """`--speed` where given, and the levers it put on (runtime/levers.py; a compiled pipeline: compile)."""
    speed = getattr(pipe, "speed", "off")
    if speed == "off":
        return {}
    levers = replace(pipe.levers, bf16=pipe.dtype == torch.bfloat16, compile=pipe.levers.compile or pipe.compiled)
    return {"speed": speed, "levers": levers.names}


def _vae(pipe) -> dict:
    """A VAE given instead of the model's own, and for a file A1111's "VAE hash" (sha256[:10])."""
    if not pipe.vae_ref:
        return {}
    path = Path(pipe.vae_ref)
    return {"vae": pipe.vae_ref, **({"vae_hash": model_hash(path)} if path.is_file() else {})}


def _guidance(pipe, request) -> dict:
    """A guidance-distilled model's (Flux dev's): `guidance` is embedded, `true_cfg` the loop's CFG."""
    embedded = pipe.family.guidance(pipe.components, request.guidance, request.true_cfg)[1] is not None
    return {
        **({"guidance_embedded": True} if embedded else {}),
        **({"true_cfg": request.true_cfg} if request.true_cfg != 1.0 else {}),
        **({"cfg_normalization": request.cfg_normalization} if request.cfg_normalization else {}),
        **({"cfg_truncation": request.cfg_truncation} if request.cfg_truncation != 1.0 else {}),
    }


def _controls(request) -> dict:
    """Each control unit (workflows/control.py: its model's path, name and hashes, its picture's path
    and pixel hash, preprocessor, weight, step range, resize and mode)."""
    units, slots = getattr(request, "controls", ()), getattr(request, "image_prompts", ())
    return {
        **({"controls": [dict(u.record) for u in units]} if units else {}),
        # each IP-Adapter image prompt (workflows/image_prompt_record.py: its picture's path and pixel
        # hash or its face embeddings' hash, scale, adapter path, name and hashes, image encoder)
        **({"image_prompts": [dict(s.record) for s in slots]} if slots else {}),
    }


def _model_lora(pipe) -> dict:
    """A LoRA folder given as the model: the LoRA, and the base it was merged into (the A1111
    line names the base as the model and the LoRA with its scale)."""
    lora = getattr(pipe.addons, "model_lora", None)
    return {} if lora is None else {"model_lora": lora, "base_model": str(pipe.model_dir)}


def _refiner(pipe) -> dict:
    r = pipe.refiner
    if r is None:
        return {}
    return {"refiner": r.model_ref, "refiner_hash": r.model_hash, "refiner_start": pipe.refiner_start}
