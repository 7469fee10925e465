"""Assembly: the server's state (config, models, queue) and the FastAPI app with its routes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import latentdiff.config.params as rules
from latentdiff.config.noise_params import NAMES as NOISE_NAMES
from latentdiff.errors import UsageError
from latentdiff.runtime.memory import pin_weights
from latentdiff.server import a1111, a1111_controlnet, api, folders
from latentdiff.server.config import ServeConfig
from latentdiff.server.controls import ControlModels
from latentdiff.server.executor import make_runner
from latentdiff.server.guards import BodyLimit, TokenAuth, install_error_handlers
from latentdiff.server.image_prompts import AdapterModels
from latentdiff.server.inputs import check_canvas
from latentdiff.server.jobs import Job, JobQueue, NotAccepting, QueueFull
from latentdiff.server.models import ModelPool
from latentdiff.server.schema import MAX_SIDE
from latentdiff.workflows.options import ImageOptions
from latentdiff.workflows.source import work_size

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("latentdiff.server")


class Server:
    """Everything the routes share. The worker thread starts here; `queue.stop()` ends it."""

    def __init__(self, cfg: ServeConfig, load=None):
        self.cfg = cfg
        self.out_dir = Path(cfg.out).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.pool = ModelPool(
            cfg.model, cfg.models_dir, self._with_folders(load or self._load), cfg.memory_budget_bytes
        )
        runner = make_runner(self.pool, self.out_dir, lambda pipe: folders.add_new_embeddings(pipe, cfg))
        self.queue = JobQueue(runner, cfg.queue_size, cfg.max_jobs_kept)
        self.control_models = ControlModels(cfg.control_dir())
        self.adapter_models = AdapterModels(cfg.adapter_dir())
        self.a1111_model = None  # what /sdapi/v1/options set as the current checkpoint (None: the default)
        self.a1111_settings = {}  # the other A1111 settings POST /sdapi/v1/options set (a1111_fields.SETTINGS)
        skipped = self.pool.links_outside()
        if skipped:
            log.warning("--models-dir: not serving %s: link(s) leading outside it", ", ".join(skipped))

    def _load(self, ref):
        # Imported with the first model, not when the server starts: the port opens before torch loads.
        from latentdiff.pipeline import Pipeline

        cfg = self.cfg
        pipe = Pipeline.from_pretrained(ref, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile, **cfg.parts(ref))
        if cfg.num_threads is not None:  # the operator's count instead of the per-call choice
            pipe.threads = cfg.num_threads
        if cfg.pin_weights:
            pin_weights(pipe.components.unet, pipe.components.vae, *pipe.components.text_encoders())
        return pipe

    def _with_folders(self, load):
        """`load`, giving each pipeline the LoRA folder its prompts' `<lora:NAME:W>` tags name files of."""
        lora_dir = self.cfg.lora_folder()

        def loaded(ref):
            pipe = load(ref)
            if lora_dir is not None:
                pipe.lora_dir = lora_dir
            return pipe

        return loaded

    def submit(self, job: Job) -> Job:
        """Check what can be checked now (model name, and every parameter when the model is loaded),
        then queue: 400 for bad input, 429 with Retry-After when full, 503 while stopping."""
        job.model, _ = self.pool.resolve(job.model)
        if job.params.get("prompt_syntax", "a1111") == "a1111":
            folders.check_lora_tags(self.cfg, job.params["prompt"])
        check_params(self.pool.peek(job.model), job.params, job.inputs.decode())
        job.inputs.check_controls()
        try:
            return self.queue.submit(job)
        except QueueFull as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        except NotAccepting:
            raise HTTPException(503, "the server is shutting down") from None

    def recent_images(self, limit: int) -> list[dict]:
        from PIL import Image

        files = sorted(self.out_dir.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        out = []
        for f in files:
            try:
                with Image.open(f) as im:
                    params = json.loads(im.text.get("latentdiff", "{}"))
            except (OSError, ValueError, SyntaxError):
                continue
            out.append({"name": f.name, "url": f"/v1/images/{f.name}", "params": params})
        return out


def check_params(pipe, params: dict, inputs: dict) -> None:
    """Every parameter as the pipeline will check it, before the job is queued: what needs no model
    always (config/params.py's rules, the image options, the outpainted canvas and the work size a
    picture gives), and with the model loaded the sizes in its multiples and the rest."""
    prompts = check_values(params)
    names = ImageOptions.names()
    opts = ImageOptions.from_kwargs({k: v for k, v in {**params, **inputs}.items() if k in names and v is not None})
    width, height = params["width"], params["height"]
    if "image" in inputs:
        size = inputs["image"].size
        if opts.outpaint is not None:
            check_canvas(size, opts.outpaint)
            size = (size[0] + opts.outpaint[0] + opts.outpaint[1], size[1] + opts.outpaint[2] + opts.outpaint[3])
        check_work_size(work_size(size, width, height, pipe.scale_factor if pipe else 1), width, height)
    if pipe is None:
        return
    source = opts.source(width, height, pipe.scale_factor)
    if source is not None:
        width, height = source.image.size
    pipe.resolve(
        prompts,
        params["negative_prompt"],
        params["steps"],
        params["guidance"],
        width,
        height,
        params["seed"],
        params["num_images"],
        params["scheduler"],
    )
    # Imported with a loaded model (torch): the schedule type and sampler options the model's sampler takes.
    from latentdiff.sampling.schedulers import OPTIONS
    from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS
    from latentdiff.workflows.additions import guide_fields, sampler_fields

    taken = {"schedule": params.get("schedule"), **{k: params.get(k) for k in (*OPTIONS, *UNIPC_SETTINGS)}}
    a1111 = any(params.get(k) is not None for k in NOISE_NAMES)  # A1111's path checks its samplers itself
    sampler_fields(pipe, params["scheduler"], taken, a1111)
    guide_fields(pipe, {k: params.get(k) for k in rules.CFG_OPTIONS})  # Z-Image's; one line elsewhere
    pipe.family.guidance(pipe.components, 1.0, rules.true_cfg(rules.api_label, params.get("true_cfg", 1.0)))


def check_values(params: dict) -> list[str]:
    """The model-independent rules of config/params.py on a job's parameters; its prompts."""
    api = rules.api_label
    prompts = rules.prompts(api, params["prompt"])
    rules.text(api, "negative_prompt", params["negative_prompt"])
    rules.scheduler(api, params["scheduler"])
    n = rules.num_images(api, params["num_images"])
    for name, check in (("steps", rules.steps), ("guidance", rules.guidance)):
        if params[name] is not None:
            check(api, params[name])
    for side in ("width", "height"):
        if params[side] is not None:
            rules.size(api, side, params[side])
    if params["seed"] is not None:
        rules.seed(api, params["seed"], len(prompts) * n)
    if params.get("clip_skip") is not None:
        rules.whole(api, "clip_skip", params["clip_skip"], 1, rules.MAX_CLIP_SKIP)
    return prompts


def check_work_size(size: tuple[int, int], width, height) -> None:
    """The size a picture gives (its own, or the other side following its aspect ratio) meets the
    same limit as a width or height given."""
    if max(size) > MAX_SIDE:
        given = "no width or height" if width is None and height is None else "one side given"
        raise UsageError(
            f"the picture gives a work size of {size[0]}x{size[1]} ({given}), over the server's "
            f"{MAX_SIDE} px limit on a side; give width and height"
        )


def create_app(server: Server) -> FastAPI:
    cfg = server.cfg
    app = FastAPI(
        title="latentdiff",
        version="0.1.0",
        description="Text-to-image latent diffusion: a job queue, our /v1 API, and the AUTOMATIC1111 subset.",
    )
    install_error_handlers(app)
    app.include_router(api.router(server))
    app.include_router(a1111.router(server))
    app.include_router(a1111_controlnet.router(server))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # The last added middleware is the outermost: CORS answers preflights before the token check.
    if cfg.token:
        app.add_middleware(TokenAuth, token=cfg.token)
    if cfg.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[cfg.cors],
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)  # outermost: refuse before anything reads
    return app
