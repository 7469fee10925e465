"""Our JSON API under /v1: submit, watch (state, server-sent events), cancel, fetch images."""

from __future__ import annotations

import asyncio
import json
import re

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from latentdiff.config.control_flags import MODES
from latentdiff.sampling.schedulers import SCHEDULERS
from latentdiff.server.controls import module_list, v1_units
from latentdiff.server.image_prompts import v1_prompts
from latentdiff.server.jobs import Job
from latentdiff.server.schema import GenerateRequest
from latentdiff.server.values import BoundedRoute

_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.png$")
KEEPALIVE_S, POLL_S = 15.0, 0.1


def router(server) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["latentdiff"], route_class=BoundedRoute)

    @r.post("/generate", status_code=202, summary="Queue a generation; returns its job id")
    async def generate(body: GenerateRequest):
        shown, controls = v1_units(server.control_models, body.controls or ())
        shown_prompts, prompts = v1_prompts(server.adapter_models, body.image_prompts or ())
        params = body.pipeline_kwargs(shown, shown_prompts)
        job = server.submit(Job(params=params, inputs=body.inputs(controls, prompts), model=body.model))
        return _job_json(server, job, status=202)

    @r.get("/jobs/{job_id}", summary="A job's state, progress and images")
    async def job_state(job_id: str):
        return _job_json(server, _find(server, job_id))

    @r.delete(
        "/jobs/{job_id}", summary="Cancel a job: a waiting one now, the running one within its step (`stops` says when)"
    )
    async def cancel(job_id: str):
        job = _find(server, job_id)
        server.queue.cancel(job)
        return _job_json(server, job, stops=job.stops)

    @r.get("/jobs/{job_id}/events", summary="Server-sent events: progress with previews, images, the end")
    async def events(job_id: str, request: Request):
        job = _find(server, job_id)
        return StreamingResponse(
            _event_stream(server, job, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @r.get("/images", summary="The most recent images in the output folder, with their parameters")
    async def recent_images(limit: int = 24):
        return {"images": server.recent_images(max(1, min(limit, 200)))}

    @r.get("/images/{name}", summary="A written PNG, parameters included in its metadata", response_class=FileResponse)
    async def image(name: str):
        return FileResponse(image_path(server.out_dir, name), media_type="image/png")

    @r.get("/models", summary="Models a request may name")
    async def models():
        return {"models": server.pool.available(), "default": server.pool.default_name}

    @r.get(
        "/controls",
        summary="Control models a unit may name (--controlnet-dir), preprocessors and modes; IP-Adapters (--ip-adapter-dir)",
    )
    async def controls():
        def listed(models):
            return [{**{k: e[k] for k in ("title", "name", "hash")}, "file": e["path"].name} for e in models.entries()]

        return {
            "models": listed(server.control_models),
            "modules": module_list()["module_list"],
            "modes": list(MODES),
            "ip_adapters": listed(server.adapter_models),
        }

    @r.get("/schedulers", summary="Scheduler names a request may give, with their A1111 sampler names")
    async def schedulers():
        return {"schedulers": [{"name": k, "a1111": m.a1111} for k, m in SCHEDULERS.items()]}

    @r.get("/health", summary="Liveness and queue state")
    async def health():
        return {
            "status": "ok" if server.queue.accepting else "stopping",
            "queue": server.queue.counts(),
            "models_loaded": server.pool.loaded(),
        }

    return r


def image_path(out_dir, name: str):
    """The file of an image name, which can only be a plain file name inside the output folder."""
    path = (out_dir / name).resolve() if _IMAGE_NAME.match(name) else None
    if path is None or path.parent != out_dir.resolve() or not path.is_file():
        raise HTTPException(404, f"no image named {name!r}")
    return path


def _find(server, job_id: str) -> Job:
    job = server.queue.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def _job_json(server, job: Job, status: int = 200, **extra) -> JSONResponse:
    d = job.to_dict(server.queue.position(job))
    d.update(events=f"/v1/jobs/{job.id}/events", **extra)
    return JSONResponse(d, status_code=status)


async def _event_stream(server, job: Job, request: Request):
    seen_version, seen_images, quiet = -1, 0, 0.0
    while True:
        if await request.is_disconnected():
            return
        if job.version != seen_version:
            seen_version = job.version
            for img in job.images[seen_images:]:
                yield _sse("image", img)
            seen_images = len(job.images)
            if job.terminal:
                yield _sse(job.state, job.to_dict())
                return
            d = {k: v for k, v in job.to_dict(server.queue.position(job), preview=True).items() if k != "params"}
            yield _sse("progress", d)
            quiet = 0.0
        elif quiet >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_S)
        quiet += POLL_S


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
