"""The AUTOMATIC1111 web UI API subset that third-party clients use (webuiapi, editor plugins), with
its request and response shapes. Generation goes through the same queue as /v1 jobs."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict

from ..errors import UsageError
from ..schedulers import SCHEDULERS
from .jobs import Job

# A1111 sampler name -> (our scheduler name, A1111 aliases)
SAMPLERS = {m.a1111: (k, list(m.aliases)) for k, m in SCHEDULERS.items()}
UNSUPPORTED = {"enable_hr": "hires fix", "restore_faces": "face restoration", "tiling": "tiling"}


class Txt2ImgRequest(BaseModel):
    """The fields latentdiff uses; clients send many more, which are accepted and ignored when off."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    batch_size: int = 1
    n_iter: int = 1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    override_settings: dict | None = None
    script_name: str | None = None
    subseed_strength: float = 0.0
    alwayson_scripts: dict | None = None


class Img2ImgRequest(Txt2ImgRequest):
    """img2img and inpainting. `inpainting_fill` is ignored: the masked area always starts from the
    picture itself noised to `denoising_strength` (A1111's "original"; at 1.0 that is pure noise)."""

    init_images: list[str] = []
    denoising_strength: float = 0.75
    resize_mode: int = 0
    mask: str | None = None
    mask_blur: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = False


# A1111 resize_mode: just resize, crop and resize, resize and fill, just resize (latent upscale)
RESIZE_MODES = ("stretch", "crop", "fit", "stretch")


def router(server) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111 subset"])

    @r.post("/txt2img", summary="A1111 txt2img: waits for the images, returns them base64 with `info`")
    async def txt2img(body: Txt2ImgRequest):
        job = await _run(server, body, _params(body))
        return {"images": [_b64(server, i["name"]) for i in job.images],
                "parameters": body.model_dump(), "info": json.dumps(_info(job, body))}

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

    @r.post("/interrupt", summary="Stop the running job at its next step")
    async def interrupt():
        job = server.queue.running
        if job is not None:
            server.queue.cancel(job)
        return {}

    @r.get("/options")
    async def get_options():
        name = server.a1111_model or server.pool.default_name
        return {"sd_model_checkpoint": name, "sd_checkpoint_hash": None, "samples_format": "png",
                "CLIP_stop_at_last_layers": 1}

    @r.post("/options", summary="Only sd_model_checkpoint is honoured: the model later requests use")
    async def set_options(options: dict):
        if "sd_model_checkpoint" in options:
            server.a1111_model, _ = server.pool.resolve(_title_name(options["sd_model_checkpoint"]))
        return None

    @r.get("/sd-models")
    async def sd_models():
        return [{"title": m["name"], "model_name": m["name"], "hash": None, "sha256": None,
                 "filename": m["name"], "config": None} for m in server.pool.available()]

    @r.get("/samplers")
    async def samplers():
        return [{"name": k, "aliases": [v[0], *v[1]], "options": {}} for k, v in SAMPLERS.items()]

    @r.get("/scripts", summary="No A1111 scripts are available")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    return r


def _params(body: Txt2ImgRequest) -> dict:
    for field, what in UNSUPPORTED.items():
        if getattr(body, field, None):
            raise UsageError(f"{field}: {what} is not supported by latentdiff")
    if body.script_name or body.subseed_strength or _active_scripts(body.alwayson_scripts):
        raise UsageError("scripts, extensions and variation seeds (subseed) are not supported by latentdiff")
    if not 1 <= body.batch_size * body.n_iter <= 16:
        raise UsageError("batch_size * n_iter must be between 1 and 16")
    if not (1 <= body.steps <= 500 and 8 <= body.width <= 2048 and 8 <= body.height <= 2048 and body.cfg_scale >= 0):
        raise UsageError("steps must be 1..500, width and height 8..2048, cfg_scale >= 0")
    return dict(prompt=body.prompt, negative_prompt=body.negative_prompt, steps=body.steps,
                guidance=body.cfg_scale, width=body.width, height=body.height,
                seed=None if body.seed < 0 else body.seed, num_images=body.batch_size * body.n_iter,
                scheduler=sampler_to_scheduler(body.sampler_name or body.sampler_index, body.scheduler))


def _img2img_params(body: Img2ImgRequest) -> tuple[dict, dict]:
    """(job params, pictures) of an img2img request."""
    from .inputs import image_inputs

    if len(body.init_images) != 1:
        raise UsageError(f"init_images: give exactly one image, got {len(body.init_images)}")
    if body.initial_noise_multiplier not in (None, 1.0):
        raise UsageError("initial_noise_multiplier other than 1 is not supported by latentdiff")
    if body.resize_mode not in range(len(RESIZE_MODES)):
        raise UsageError(f"resize_mode must be 0..{len(RESIZE_MODES) - 1}, got {body.resize_mode}")
    params = _params(body)
    params.update(strength=body.denoising_strength, resize=RESIZE_MODES[body.resize_mode])
    if body.mask is not None:
        params.update(mask_blur=body.mask_blur, inpaint_area="masked" if body.inpaint_full_res else "full",
                      padding=body.inpaint_full_res_padding)
    return params, image_inputs(body.init_images[0], body.mask, bool(body.inpainting_mask_invert))


async def _run(server, body: Txt2ImgRequest, params: dict, inputs: dict | None = None) -> Job:
    """Queue the job and wait for it (A1111 answers with the images); 400 when the request's own
    input fails it, 500 otherwise."""
    job = server.submit(Job(params=params, inputs=inputs or {}, model=_model(server, body), source="a1111"))
    while not job.terminal:
        await asyncio.sleep(0.05)
    if job.state == "failed":
        raise HTTPException(400 if job.client_error else 500, job.error)
    return job


def sampler_to_scheduler(sampler: str | None, schedule: str | None) -> str | None:
    if not sampler:
        return None
    name = f"{sampler} Karras" if (schedule or "").lower() == "karras" and "Karras" not in sampler else sampler
    for a1111_name, (ours, aliases) in SAMPLERS.items():
        if name.lower() in (a1111_name.lower(), ours, *aliases):
            return ours
    raise UsageError(f"unknown sampler {name!r}; GET /sdapi/v1/samplers lists: {', '.join(SAMPLERS)}")


def _active_scripts(scripts: dict | None) -> bool:
    return any(isinstance(v, dict) and v.get("args") not in (None, [], [False]) for v in (scripts or {}).values())


def _model(server, body: Txt2ImgRequest) -> str | None:
    override = (body.override_settings or {}).get("sd_model_checkpoint")
    return _title_name(override) if override else server.a1111_model


def _title_name(title: str) -> str:
    """A1111 titles look like 'name.safetensors [hash]'; ours are folder names."""
    return str(title).split(" [")[0].strip()


def _b64(server, name: str) -> str:
    return base64.b64encode((server.out_dir / name).read_bytes()).decode()


def _info(job: Job, body: Txt2ImgRequest, denoising_strength: float | None = None) -> dict:
    from ..image_output import a1111_line

    params = [i["params"] for i in job.images]
    first = params[0] if params else {}
    return {
        "prompt": body.prompt, "all_prompts": [p["prompt"] for p in params],
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [p["negative_prompt"] for p in params],
        "seed": first.get("seed", body.seed), "all_seeds": [p["seed"] for p in params],
        "subseed": -1, "all_subseeds": [-1] * len(params), "subseed_strength": 0,
        "width": first.get("width", body.width), "height": first.get("height", body.height), "sampler_name": body.sampler_name or body.sampler_index,
        "cfg_scale": body.cfg_scale, "steps": body.steps, "batch_size": body.batch_size,
        "restore_faces": False, "sd_model_name": job.model, "sd_model_hash": first.get("model_hash"),
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": denoising_strength,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": [a1111_line(p) for p in params],
        "styles": [], "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": 1, "is_using_inpainting_conditioning": False, "interrupted": job.state == "cancelled",
        "version": "latentdiff 0.1.0",
    }


def _progress(server, skip_image: bool) -> dict:
    job, counts = server.queue.running, server.queue.counts()
    state = {"skipped": False, "interrupted": False, "job": "", "job_count": counts["running"] + counts["waiting"],
             "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    frac = job.step / job.total_steps if job.total_steps else 0.0
    elapsed = time.time() - (job.started or time.time())
    state.update(job=job.id, interrupted=job.cancel.is_set(), sampling_step=job.step, sampling_steps=job.total_steps,
                 job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)))
    image = None if skip_image or not job.preview else job.preview.split(",", 1)[1]
    return {"progress": round(frac, 4), "eta_relative": round(elapsed / frac - elapsed, 2) if frac else 0.0,
            "state": state, "current_image": image, "textinfo": None}
