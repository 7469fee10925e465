"""The AUTOMATIC1111 web UI API subset that third-party clients use (webuiapi, editor plugins), with
its request and response shapes. Generation goes through the same queue as /v1 jobs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json

from fastapi import APIRouter, HTTPException

from latentdiff.errors import UsageError
from latentdiff.formats.lora import LoraSpec
from latentdiff.formats.lora_merge import is_lora_folder
from latentdiff.images.infotext import NETWORK_TAG
from latentdiff.sampling.schedulers import method_of
from latentdiff.server import a1111_controlnet, a1111_routes, folders, upscaler_models
from latentdiff.server.a1111_flow import on_family
from latentdiff.server.a1111_info import info_object
from latentdiff.server.a1111_infotext import with_infotext
from latentdiff.server.a1111_params import (
    Img2ImgRequest,
    Txt2ImgRequest,
    check_settings,
    job_params,
    settings,
    short,
    title_name,
)
from latentdiff.server.a1111_pixels import blocker, check_loaded, masked_off_path, path_refusal, plan, rng_of
from latentdiff.server.a1111_routes import keep_settings
from latentdiff.server.inputs import Pictures, pictures
from latentdiff.server.jobs import Job
from latentdiff.server.values import BoundedRoute

# A1111 resize_mode: just resize, crop and resize, resize and fill, just resize (latent upscale)
RESIZE_MODES = ("stretch", "crop", "fit", "stretch")


def router(server) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111 subset"], route_class=BoundedRoute)

    @r.post("/txt2img", summary="A1111 txt2img: waits for the images, returns them base64 with `info`")
    async def txt2img(body: Txt2ImgRequest):
        body = with_infotext(body)
        job = await _run(server, body, _params(server, body))
        return _answer(server, job, body, body.model_dump())

    @r.post("/img2img", summary="A1111 img2img and inpainting: one init image (base64), optional mask")
    async def img2img(body: Img2ImgRequest):
        body = with_infotext(body)
        params, inputs, warnings = _img2img_params(body, _params(server, body))
        job = await _run(server, body, params, inputs, warnings)
        shown = body.model_dump()
        if not body.include_init_images:  # as A1111: the pictures are not echoed back unless asked
            shown.update(init_images=None, mask=None)
        return _answer(server, job, body, shown, denoising_strength=body.denoising_strength)

    a1111_routes.add_routes(r, server)
    return r


def _answer(server, job: Job, body: Txt2ImgRequest, shown: dict, denoising_strength=None) -> dict:
    images = [_b64(server, i["name"]) for i in job.images] if body.send_images else []
    pipe = server.pool.peek(job.model)
    inpainting = pipe is not None and pipe.family.inpainting(pipe.components)
    info = info_object(job, body, denoising_strength, inpainting)
    return {"images": images, "parameters": shown, "info": json.dumps(info)}


def _params(server, body: Txt2ImgRequest) -> dict:
    """The job parameters of a body, with the settings /options stored and the model's own sampler
    (when the body names none and the model is loaded)."""
    pipe = server.pool.peek(server.pool.resolve(_model(server, body))[0])
    own = method_of(pipe.components.scheduler_config) if pipe is not None else None
    params = job_params(body, server.a1111_settings, own, lambda name: upscaler_models.resolve(server.cfg, name))
    styled = folders.apply_styles(server.cfg, body.styles, params["prompt"], params["negative_prompt"])
    params["prompt"], params["negative_prompt"] = styled
    vae = folders.vae_path(server.cfg, settings(server.a1111_settings, body)["sd_vae"])
    if vae is not None:
        params["vae"] = vae  # the executor decodes with it (vae_swapped)
    return params


def _img2img_params(body: Img2ImgRequest, params: dict) -> tuple[dict, Pictures, list[str]]:
    """(job params, pictures, warnings) of an img2img request."""
    if len(body.init_images) != 1:
        raise UsageError(f"init_images: give exactly one image, got {len(body.init_images)}")
    params.update(strength=body.denoising_strength, resize=RESIZE_MODES[body.resize_mode])
    warnings = []
    if body.mask is not None:
        params.update(
            mask_blur=_mask_blur(body),
            inpaint_area="masked" if body.inpaint_full_res else "full",
            padding=body.inpaint_full_res_padding,
        )
    return params, pictures(body.init_images[0], body.mask, bool(body.inpainting_mask_invert)), warnings


def _mask_blur(body: Img2ImgRequest) -> int:
    """A1111's mask_blur sets both its x and y blur; without it, mask_blur_x and _y must agree."""
    if body.mask_blur is not None:
        return body.mask_blur
    if body.mask_blur_x != body.mask_blur_y:
        raise UsageError(
            f"mask_blur_x={body.mask_blur_x}, mask_blur_y={body.mask_blur_y}: separate x and y mask blur "
            "is not supported by latentdiff; give mask_blur"
        )
    return body.mask_blur_x


async def _run(server, body, params: dict, inputs: Pictures | None = None, warnings: list | None = None) -> Job:
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
    if body.disable_extra_networks:  # as A1111: the tags are taken out, nothing applied
        params["prompt"] = NETWORK_TAG.sub("", params["prompt"]).strip()
    params["prompt"] = _without_own_lora_tag(server, model, params["prompt"])
    pipe = server.pool.peek(server.pool.resolve(model)[0])
    if pipe is not None:  # else the worker reads them with the model (executor.py)
        params = on_family(pipe, params)
    if "refiner" in params:  # a model of the folder, loaded beside the model for the job (executor.py)
        params["refiner"], _ = server.pool.resolve(params["refiner"])
    rng, note = _sampling_path(server, body, params, bool(found.files or found.prompts))
    reason = path_refusal(pipe, params) if rng is not None and pipe is not None else None
    if reason is not None:  # the loaded model runs on diffusers' path (a transformer family, its own sampler)
        rng, note = None, f"A1111's own path does not run {reason}"
    warnings = (warnings or []) + _masked_content(body, params, rng is not None)
    job = Job(params=params, inputs=inputs, model=model, source="a1111", warnings=warnings or [])
    job.a1111_rng, job.path_note = rng, note
    check_loaded(pipe, params)
    job = server.submit(job)
    if not body.override_settings_restore_afterwards:  # as A1111: the overrides stay as settings
        keep_settings(server, check_settings(body.override_settings or {}, "override_settings"))
    while not job.terminal:
        await asyncio.sleep(0.05)
    if job.state == "failed":
        raise HTTPException(400 if job.client_error else 500, job.error)
    return job


MASKED_CONTENT = {0: "fill", 2: "latent_noise", 3: "latent_nothing"}  # A1111's inpainting_fill; 1: original


def _masked_content(body, params: dict, on_path: bool) -> list[str]:
    """inpainting_fill: on A1111's own path each of its four; on diffusers' path 1 (original), 0 run as
    1 with a warning, 2 and 3 refused (a1111_pixels.masked_off_path). -> the warnings."""
    fill = getattr(body, "inpainting_fill", 1)
    if getattr(body, "mask", None) is None or fill == 1:
        return []
    params["masked_content"] = MASKED_CONTENT[fill]
    return [] if on_path else masked_off_path(params)


def _sampling_path(server, body, params: dict, controls: bool) -> tuple[str | None, str | None]:
    """(the noise source of A1111's own path where the job is to run there, or why not: a1111_pixels.py)."""
    chosen = {**server.a1111_settings, **check_settings(body.override_settings or {}, "override_settings")}
    wanted = server.cfg.a1111_pixels == "on" or "randn_source" in chosen
    blocked = blocker(body, body.route, controls)
    return plan(params, wanted, rng_of(chosen), blocked)


def _without_own_lora_tag(server, model: str | None, prompt: str) -> str:
    """A1111 applies `<lora:NAME:SCALE>` tags in prompts from its LoRA folder (here: the server's,
    folders.py; the pipeline merges them for the call). A LoRA folder of --models-dir is a model of
    its own: the tag our infotext writes for the requested one (scale 1) is dropped as done; any
    other tag stays, for the LoRA folder (a 400 naming it where that has no such file)."""
    from pathlib import Path

    tags = NETWORK_TAG.findall(prompt)
    if not tags:
        return prompt
    _, ref = server.pool.resolve(model)
    own = LoraSpec(Path(ref)).name if ref and Path(ref).is_dir() and is_lora_folder(Path(ref)) else None

    def drop(m):
        kind, name, scale = m.groups()
        return "" if kind == "lora" and name == own and (scale or "").strip() in ("", "1", "1.0") else m.group(0)

    return NETWORK_TAG.sub(drop, prompt).strip()


def _model(server, body: Txt2ImgRequest) -> str | None:
    override = (body.override_settings or {}).get("sd_model_checkpoint")
    if override is not None and not isinstance(override, str):
        raise UsageError(f"override_settings.sd_model_checkpoint must be a model name, got {short(override)}")
    return title_name(override) if override else server.a1111_model


def _b64(server, name: str) -> str:
    return base64.b64encode((server.out_dir / name).read_bytes()).decode()
