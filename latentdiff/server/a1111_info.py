"""The `info` object of A1111's txt2img and img2img answers (its Processed.js()), filled from what ran."""

from __future__ import annotations

import time

from latentdiff.server.a1111_infotext import extra_generation_params
from latentdiff.server.jobs import Job

VERSION = "latentdiff 0.1.0"


def info_object(job: Job, body, denoising_strength: float | None = None, inpainting: bool = False) -> dict:
    """A1111's `info` with the values the images were made with (the model's where the request left
    them out), plus latentdiff's `interrupted` and `warnings` (e.g. a size far above the model's)."""
    # Imported with the first job: images.write imports torch, which the server loads with its first model.
    from latentdiff.images.infotext import _model_name
    from latentdiff.images.write import a1111_line

    params = [i["params"] for i in job.images]
    first = params[0] if params else {}
    infotexts = [a1111_line(p) for p in params]
    extra = extra_generation_params(infotexts[0]) if infotexts else {}
    if body.enable_hr and first.get("hires"):
        denoising_strength = first.get("hires_strength")
    elif not body.enable_hr and first.get("strength") is not None:
        denoising_strength = first["strength"]
    seeds = [p["seed"] for p in params]
    return {
        "prompt": body.prompt,
        "all_prompts": [p["prompt"] for p in params],
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [p["negative_prompt"] for p in params],
        "seed": first.get("seed", body.seed),
        "all_seeds": seeds,
        "subseed": first.get("variation_seed", -1),  # recorded on A1111's own path (a1111_params.seed_params)
        "all_subseeds": [p.get("variation_seed", -1) for p in params],
        "subseed_strength": first.get("variation_strength", 0),
        "width": first.get("width", body.width),
        "height": first.get("height", body.height),
        "sampler_name": first.get("sampler", body.sampler_name or body.sampler_index),
        # Forge's for a guidance-distilled model: the loop's CFG (the embedded guidance is "Distilled CFG Scale")
        "cfg_scale": first.get("true_cfg", 1.0)
        if first.get("guidance_embedded")
        else first.get("guidance", body.cfg_scale),
        "steps": first.get("steps", body.steps),
        "batch_size": body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": job.model,
        "sd_model_hash": first.get("model_hash"),
        "sd_vae_name": _model_name(first.get("vae")),
        "sd_vae_hash": None,
        "seed_resize_from_w": (first.get("seed_resize_from") or (-1, -1))[0],
        "seed_resize_from_h": (first.get("seed_resize_from") or (-1, -1))[1],
        "denoising_strength": denoising_strength,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": list(body.styles or []),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": first.get("clip_skip") or 1,
        "is_using_inpainting_conditioning": inpainting,
        "version": VERSION,
        "interrupted": job.state == "cancelled",
        "warnings": list(job.warnings),
        # latentdiff's: A1111's own path (its pixels) or diffusers' (a warning says why; a1111_pixels.py)
        "sampling_path": "A1111" if first.get("rng") else "diffusers",
        "sampling_path_note": None if first.get("rng") else job.path_note,
    }
