"""The AUTOMATIC1111 web UI API subset that third-party clients use (webuiapi, editor plugins), with
its request and response shapes. Generation goes through the same queue as /v1 jobs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time

from fastapi import APIRouter, HTTPException

from latentdiff.errors import UsageError
from latentdiff.formats.lora import LoraSpec
from latentdiff.formats.lora_merge import is_lora_folder
from latentdiff.images.control_infotext import controlnet_fields
from latentdiff.images.infotext import NETWORK_TAG
from latentdiff.server import a1111_controlnet
from latentdiff.server.a1111_params import SAMPLERS, Img2ImgRequest, Txt2ImgRequest, job_params, short
from latentdiff.server.inputs import Pictures, pictures
from latentdiff.server.jobs import Job
from latentdiff.server.values import BoundedRoute

# A1111 resize_mode: just resize, crop and resize, resize and fill, just resize (latent upscale)
RESIZE_MODES = ("stretch", "crop", "fit", "stretch")
# The options GET /options shows besides the model; POST /options accepts them only at these values.
FIXED_OPTIONS = {"sd_checkpoint_hash": None, "samples_format": "png", "CLIP_stop_at_last_layers": 1}


def router(server) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111 subset"], route_class=BoundedRoute)

    @r.post("/txt2img", summary="A1111 txt2img: waits for the images, returns them base64 with `info`")
    async def txt2img(body: Txt2ImgRequest):
        job = await _run(server, body, job_params(body))
        return {
            "images": [_b64(server, i["name"]) for i in job.images],
            "parameters": body.model_dump(),
            "info": json.dumps(_info(job, body)),
        }

    @r.post("/img2img", summary="A1111 img2img and inpainting: one init image (base64), optional mask")
    async def img2img(body: Img2ImgRequest):
        job = await _run(server, body, *_img2img_params(body))
        shown = body.model_dump()
        if not body.include_init_images:  # as A1111: the pictures are not echoed back unless asked
            shown.update(init_images=None, mask=None)
        info = _info(job, body, denoising_strength=body.denoising_strength)
        return {"images": [_b64(server, i["name"]) for i in job.images], "parameters": shown, "info": json.dumps(info)}

    @r.get("/progress", summary="Progress of the running job, with a preview")
    async def progress(skip_current_image: bool = False):
        return _progress(server, skip_current_image)

    @r.post("/interrupt", summary="Stop the running job within its step (`stops` says when)")
    async def interrupt():
        job = server.queue.running
        if job is None:
            return {}
        server.queue.cancel(job)
        return {"interrupted": job.id, "stops": job.stops}

    @r.get("/options")
    async def get_options():
        return {**FIXED_OPTIONS, "sd_model_checkpoint": server.a1111_model or server.pool.default_name}

    @r.post(
        "/options",
        summary="Only sd_model_checkpoint is honoured: the model later requests use; "
        "other options may only be sent at the values GET /options shows",
    )
    async def set_options(options: dict):
        for key, value in options.items():
            if key != "sd_model_checkpoint" and (key not in FIXED_OPTIONS or value != FIXED_OPTIONS[key]):
                raise UsageError(
                    f"option {short(key)}={short(value)} is not supported by latentdiff; it honours "
                    f"sd_model_checkpoint, and takes {', '.join(FIXED_OPTIONS)} at the values GET /options shows"
                )
        if "sd_model_checkpoint" in options:
            name = options["sd_model_checkpoint"]
            if not isinstance(name, str):
                raise UsageError(f"option sd_model_checkpoint must be a model name, got {short(name)}")
            server.a1111_model, _ = server.pool.resolve(_title_name(name))
        return None

    @r.get("/sd-models")
    async def sd_models():
        return [
            {
                "title": m["name"],
                "model_name": m["name"],
                "hash": None,
                "sha256": None,
                "filename": m["name"],
                "config": None,
            }
            for m in server.pool.available()
        ]

    @r.get("/samplers")
    async def samplers():
        return [{"name": k, "aliases": [v[0], *v[1]], "options": {}} for k, v in SAMPLERS.items()]

    @r.get("/scripts", summary="No A1111 scripts are available")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    return r


def _img2img_params(body: Img2ImgRequest) -> tuple[dict, dict]:
    """(job params, pictures) of an img2img request."""
    if len(body.init_images) != 1:
        raise UsageError(f"init_images: give exactly one image, got {len(body.init_images)}")
    if body.initial_noise_multiplier not in (None, 1.0):
        raise UsageError("initial_noise_multiplier other than 1 is not supported by latentdiff")
    if body.resize_mode not in range(len(RESIZE_MODES)):
        raise UsageError(f"resize_mode must be 0..{len(RESIZE_MODES) - 1}, got {body.resize_mode}")
    params = job_params(body)
    params.update(strength=body.denoising_strength, resize=RESIZE_MODES[body.resize_mode])
    if body.mask is not None:
        params.update(
            mask_blur=body.mask_blur,
            inpaint_area="masked" if body.inpaint_full_res else "full",
            padding=body.inpaint_full_res_padding,
        )
    return params, pictures(body.init_images[0], body.mask, bool(body.inpainting_mask_invert))


async def _run(server, body: Txt2ImgRequest, params: dict, inputs: Pictures | None = None) -> Job:
    """Queue the job (with the ControlNet extension's units, a1111_controlnet.py) and wait for it
    (A1111 answers with the images); 400 when the request's own input fails it, 500 otherwise."""
    init_image = body.init_images[0] if isinstance(body, Img2ImgRequest) else None
    found = a1111_controlnet.units(server.control_models, body, init_image, server.adapter_models)
    inputs = inputs or Pictures()
    if found.files:
        params.update(controls=found.shown, control_mode=found.mode)
        inputs = dataclasses.replace(inputs, controls=found.files)
    if found.prompts:
        params.update(image_prompts=found.prompts_shown)
        inputs = dataclasses.replace(inputs, prompts=found.prompts)
    model = _model(server, body)
    params["prompt"] = _without_own_lora_tag(server, model, params["prompt"])
    job = server.submit(Job(params=params, inputs=inputs, model=model, source="a1111"))
    while not job.terminal:
        await asyncio.sleep(0.05)
    if job.state == "failed":
        raise HTTPException(400 if job.client_error else 500, job.error)
    return job


def _without_own_lora_tag(server, model: str | None, prompt: str) -> str:
    """A1111 applies `<lora:NAME:SCALE>` tags in prompts; here a LoRA is a model of its own. The tag
    our infotext writes for the requested LoRA model (scale 1) is dropped as done; any other is a 400."""
    from pathlib import Path

    tags = NETWORK_TAG.findall(prompt)
    if not tags:
        return prompt
    _, ref = server.pool.resolve(model)
    own = LoraSpec(Path(ref)).name if ref and Path(ref).is_dir() and is_lora_folder(Path(ref)) else None
    for kind, name, scale in tags:
        if kind != "lora" or name != own or scale.strip() not in ("", "1", "1.0"):
            raise UsageError(
                f"prompt tag <{kind}:{name}{':' + scale if scale else ''}>: tags are not applied here; "
                "a LoRA folder of --models-dir is a model of its own (choose it with "
                "sd_model_checkpoint, GET /sdapi/v1/sd-models lists them), at scale 1"
            )
    return NETWORK_TAG.sub("", prompt).strip()


def _model(server, body: Txt2ImgRequest) -> str | None:
    override = (body.override_settings or {}).get("sd_model_checkpoint")
    return _title_name(override) if override else server.a1111_model


def _title_name(title: str) -> str:
    """A1111 titles look like 'name.safetensors [hash]'; ours are folder names."""
    return str(title).split(" [")[0].strip()


def _b64(server, name: str) -> str:
    return base64.b64encode((server.out_dir / name).read_bytes()).decode()


def _info(job: Job, body: Txt2ImgRequest, denoising_strength: float | None = None) -> dict:
    """A1111's `info`, with the values the images were made with (the model's where the request
    left them out) and latentdiff's `warnings` (e.g. a size far above the model's)."""
    # Imported with the first job: images.write imports torch, which the server loads with its first model.
    from latentdiff.images.write import a1111_line

    params = [i["params"] for i in job.images]
    first = params[0] if params else {}
    extra = {}
    if body.enable_hr and first.get("hires"):
        denoising_strength = first.get("hires_strength")
        extra = {"Hires upscale": first["hires"], "Hires upscaler": body.hr_upscaler or "Latent"}
        extra.update({"Hires steps": first["hires_steps"]} if first.get("hires_steps") else {})
    extra.update(controlnet_fields(first))
    return {
        "prompt": body.prompt,
        "all_prompts": [p["prompt"] for p in params],
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [p["negative_prompt"] for p in params],
        "seed": first.get("seed", body.seed),
        "all_seeds": [p["seed"] for p in params],
        "subseed": -1,
        "all_subseeds": [-1] * len(params),
        "subseed_strength": 0,
        "width": first.get("width", body.width),
        "height": first.get("height", body.height),
        "sampler_name": first.get("sampler", body.sampler_name or body.sampler_index),
        "cfg_scale": first.get("guidance", body.cfg_scale),
        "steps": first.get("steps", body.steps),
        "batch_size": body.batch_size,
        "restore_faces": False,
        "sd_model_name": job.model,
        "sd_model_hash": first.get("model_hash"),
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": denoising_strength,
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": [a1111_line(p) for p in params],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": first.get("clip_skip") or 1,
        "is_using_inpainting_conditioning": False,
        "interrupted": job.state == "cancelled",
        "version": "latentdiff 0.1.0",
        "warnings": list(job.warnings),
    }


def _progress(server, skip_image: bool) -> dict:
    job, counts = server.queue.running, server.queue.counts()
    state = {
        "skipped": False,
        "interrupted": False,
        "job": "",
        "job_count": counts["running"] + counts["waiting"],
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    frac = job.step / job.total_steps if job.total_steps else 0.0
    elapsed = time.time() - (job.started or time.time())
    state.update(
        job=job.id,
        interrupted=job.cancel.is_set(),
        sampling_step=job.step,
        sampling_steps=job.total_steps,
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
    )
    image = None if skip_image or not job.preview else job.preview.split(",", 1)[1]
    return {
        "progress": round(frac, 4),
        "eta_relative": round(elapsed / frac - elapsed, 2) if frac else 0.0,
        "state": state,
        "current_image": image,
        "textinfo": "; ".join(job.warnings) or None,
    }
