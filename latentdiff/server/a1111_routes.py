"""The A1111 routes clients call to discover and control the server (samplers, schedulers, models,
settings, progress, interrupt, memory, PNG info, ...), in A1111 1.10's answer shapes
(modules/api/models.py). What latentdiff has none of is an empty list, honestly."""

from __future__ import annotations

import os
import sys
import time

from pydantic import BaseModel, ConfigDict

from latentdiff.errors import UsageError
from latentdiff.sampling.schedulers import SCHEDULERS, SCHEDULES, runnable_schedules
from latentdiff.server import folders, upscaler_models
from latentdiff.server.a1111_fields import SETTINGS
from latentdiff.server.a1111_hires import HR_UPSCALERS
from latentdiff.server.a1111_infotext import png_info
from latentdiff.server.a1111_params import check_settings, title_name

# A1111's Schedule rows: its default rho where it has one, and whether it needs the model's sigmas.
_RHO = {"karras": 7.0, "polyexponential": 1.0}
_INNER = {"uniform", "sgm_uniform", "simple", "normal", "ddim", "beta"}
_EMPTY_LISTS = ("/face-restorers", "/hypernetworks")


class PNGInfoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str


def keep_settings(server, values: dict) -> None:
    """Settings checked by check_settings, kept for later requests (POST /options)."""
    if "sd_model_checkpoint" in values:
        server.a1111_model, _ = server.pool.resolve(title_name(values["sd_model_checkpoint"]))
    if "sd_vae" in values:
        folders.vae_path(server.cfg, values["sd_vae"])  # 400 for a VAE the folder lacks
    server.a1111_settings.update({k: v for k, v in values.items() if k != "sd_model_checkpoint"})


def options(server) -> dict:
    current = {k: s.default for k, s in SETTINGS.items()}
    return {**current, **server.a1111_settings, "sd_model_checkpoint": server.a1111_model or server.pool.default_name}


def samplers() -> list[dict]:
    return [
        {"name": m.a1111, "aliases": [k, *m.aliases], "options": {"scheduler": m.automatic} if m.automatic else {}}
        for k, m in SCHEDULERS.items()
    ]


def schedulers() -> list[dict]:
    """The schedule types that run here with some sampler, as A1111 lists its schedulers."""
    runs = {s for k in SCHEDULERS for s in runnable_schedules(k)}
    return [
        {
            "name": k,
            "label": s.a1111,
            "aliases": [*s.aliases, *s.comfy] or None,
            "default_rho": _RHO.get(k),
            "need_inner_model": k in _INNER,
        }
        for k, s in SCHEDULES.items()
        if k in runs
    ]


def upscalers(cfg) -> list[dict]:
    """The hires upscalers of the decoded image (Latent is a latent upscale mode, as in A1111): A1111's
    None, Lanczos, Nearest and the upscaler model files of the models folder (upscaler_models.py)."""
    item = {"model_name": None, "model_path": None, "model_url": None, "scale": 4}
    own = [{"name": name, **item} for name, ours in HR_UPSCALERS.items() if not ours.startswith("latent")]
    return own + upscaler_models.listing(cfg)


def cmd_flags(server) -> dict:
    """The server's settings under A1111's flag names where it has one, and our own."""
    cfg = server.cfg
    return {
        "api": True,
        "nowebui": False,
        "listen": cfg.host not in ("127.0.0.1", "localhost", "::1"),
        "port": cfg.port,
        "ckpt_dir": cfg.models_dir,
        "lora_dir": _shown(cfg.lora_folder()),
        "embeddings_dir": _shown(cfg.embedding_folder()),
        "vae_dir": _shown(cfg.vae_folder()),
        "controlnet_dir": _shown(cfg.control_dir()),
        "api_auth": "set" if cfg.token else None,
        "device": cfg.device,
        "dtype": cfg.dtype,
        "compile": cfg.compile,
        "queue_size": cfg.queue_size,
        "out": cfg.out,
    }


def _shown(folder) -> str | None:
    return None if folder is None else str(folder)


def memory() -> dict:
    """RAM and CUDA memory as A1111 reports them (bytes); cuda an `error` without a CUDA device."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        ram = {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
    except ImportError:
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        ram = {"free": free, "used": total - free, "total": total}
    return {"ram": ram, "cuda": _cuda()}


def _cuda() -> dict:
    torch = sys.modules.get("torch")  # loaded with the first model; never imported here for this
    if torch is None or not torch.cuda.is_available():
        return {"error": "no CUDA device in use"}
    free, total = torch.cuda.mem_get_info()
    s = torch.cuda.memory_stats()
    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": {"current": s.get("active_bytes.all.current", 0), "peak": s.get("active_bytes.all.peak", 0)},
        "allocated": {"current": s.get("allocated_bytes.all.current", 0), "peak": s.get("allocated_bytes.all.peak", 0)},
        "reserved": {"current": s.get("reserved_bytes.all.current", 0), "peak": s.get("reserved_bytes.all.peak", 0)},
        "inactive": {
            "current": s.get("inactive_split_bytes.all.current", 0),
            "peak": s.get("inactive_split_bytes.all.peak", 0),
        },
        "events": {"retries": s.get("num_alloc_retries", 0), "oom": s.get("num_ooms", 0)},
    }


def progress(server, skip_image: bool) -> dict:
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


def add_routes(r, server) -> None:
    """The discovery and control routes on the /sdapi/v1 router `r`."""

    @r.get("/progress", summary="Progress of the running job, with a preview")
    async def get_progress(skip_current_image: bool = False):
        return progress(server, skip_current_image)

    @r.post("/interrupt", summary="Stop the running job within its step (`stops` says when)")
    async def interrupt():
        job = server.queue.running
        if job is None:
            return {}
        server.queue.cancel(job)
        return {"interrupted": job.id, "stops": job.stops}

    @r.post("/skip", summary="Nothing to skip: a 400 while a job runs (POST /interrupt stops it)")
    async def skip():
        if server.queue.running is not None:
            raise UsageError(
                "skip (drop the current image, go on with the batch) is not supported by latentdiff; "
                "POST /sdapi/v1/interrupt stops the job"
            )
        return None

    @r.get("/options", summary="The settings latentdiff has (docs/serving.md's settings table)")
    async def get_options():
        return options(server)

    @r.post("/options", summary="Set settings for later requests; a setting latentdiff lacks is a 400 naming it")
    async def set_options(values: dict):
        keep_settings(server, check_settings(values, "options"))
        return None

    @r.get("/cmd-flags")
    async def get_cmd_flags():
        return cmd_flags(server)

    @r.get("/sd-models")
    async def sd_models():
        item = {"hash": None, "sha256": None, "config": None}
        return [
            {"title": m["name"], "model_name": m["name"], "filename": m["name"], **item}
            for m in server.pool.available()
        ]

    @r.get("/samplers")
    async def get_samplers():
        return samplers()

    @r.get("/schedulers")
    async def get_schedulers():
        return schedulers()

    @r.get("/upscalers")
    async def get_upscalers():
        return upscalers(server.cfg)

    @r.get("/realesrgan-models", summary="The RealESRGAN folder's upscaler models (hr_upscaler names them)")
    async def realesrgan_models():
        rows = upscaler_models.listing(server.cfg)
        return [
            {"name": u["name"], "path": u["model_path"], "scale": u["scale"]}
            for u in rows
            if u["model_name"] == "RealESRGAN"
        ]

    @r.get("/latent-upscale-modes")
    async def latent_upscale_modes():
        return [{"name": name} for name, ours in HR_UPSCALERS.items() if ours.startswith("latent")]

    @r.get("/embeddings", summary="The embeddings folder's files, written in a prompt by file name")
    async def embeddings():
        return folders.embeddings(server.cfg)

    @r.get("/loras", summary="The LoRA files a prompt's <lora:NAME:W> tags may name")
    async def loras():
        return folders.loras(server.cfg)

    @r.get("/sd-vae", summary="The VAEs the sd_vae setting may name")
    async def sd_vae():
        return folders.vaes(server.cfg)

    @r.get("/prompt-styles", summary="The styles of styles.csv in the models folder")
    async def prompt_styles():
        return folders.styles(server.cfg)

    @r.get("/memory")
    async def get_memory():
        return memory()

    @r.post("/png-info", summary="A picture's A1111 parameters text, its other text items, and the parsed fields")
    async def get_png_info(body: PNGInfoRequest):
        return png_info(body.image)

    @r.get("/scripts", summary="No A1111 scripts are available")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    for path in _EMPTY_LISTS:
        r.add_api_route(path, _empty, methods=["GET"], summary="latentdiff has none of these")
    for path in ("/refresh-checkpoints", "/refresh-loras", "/refresh-vae", "/refresh-embeddings"):
        r.add_api_route(path, _refresh, methods=["POST"], summary="Nothing to do: the folders are read at each request")


async def _empty():
    return []


async def _refresh():
    return None
