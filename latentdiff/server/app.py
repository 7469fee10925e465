"""Assembly: the server's state (config, models, queue) and the FastAPI app with its routes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from latentdiff.sampling.schedulers import check_scheduler_name
from latentdiff.server import a1111, api
from latentdiff.server.config import ServeConfig
from latentdiff.server.executor import make_runner
from latentdiff.server.guards import BodyLimit, TokenAuth, install_error_handlers
from latentdiff.server.jobs import Job, JobQueue, NotAccepting, QueueFull
from latentdiff.server.models import ModelPool
from latentdiff.workflows.options import ImageOptions

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("latentdiff.server")


class Server:
    """Everything the routes share. The worker thread starts here; `queue.stop()` ends it."""

    def __init__(self, cfg: ServeConfig, load=None):
        self.cfg = cfg
        self.out_dir = Path(cfg.out).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.pool = ModelPool(cfg.model, cfg.models_dir, load or self._load, cfg.memory_budget_bytes)
        self.queue = JobQueue(make_runner(self.pool, self.out_dir), cfg.queue_size, cfg.max_jobs_kept)
        self.a1111_model = None  # what /sdapi/v1/options set as the current checkpoint (None: the default)
        skipped = self.pool.links_outside()
        if skipped:
            log.warning("--models-dir: not serving %s: link(s) leading outside it", ", ".join(skipped))

    def _load(self, ref):
        # Imported with the first model, not when the server starts: the port opens before torch loads.
        from latentdiff.pipeline import Pipeline

        return Pipeline.from_pretrained(ref, device=self.cfg.device, dtype=self.cfg.dtype, compile=self.cfg.compile)

    def submit(self, job: Job) -> Job:
        """Check what can be checked now (model name, and every parameter when the model is loaded),
        then queue: 400 for bad input, 429 with Retry-After when full, 503 while stopping."""
        job.model, _ = self.pool.resolve(job.model)
        check_params(self.pool.peek(job.model), job.params, job.inputs)
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
    """Every parameter as the pipeline will check it: the image options always, and with the model
    loaded the sizes (the init image's when none is given) and the rest."""
    if params.get("scheduler") is not None:
        check_scheduler_name(params["scheduler"])
    names = ImageOptions.names()
    opts = ImageOptions.from_kwargs({k: v for k, v in {**params, **inputs}.items() if k in names and v is not None})
    if pipe is None:
        return
    width, height = params["width"], params["height"]
    source = opts.source(width, height, pipe.scale_factor)
    if source is not None:
        width, height = source.image.size
    prompts = [params["prompt"]] if isinstance(params["prompt"], str) else params["prompt"]
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
