"""What the worker does with a job: pick the model, generate with a step callback (progress,
previews, cancellation), and write every image as soon as it exists."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import Cancelled
from .jobs import Job

PREVIEW_EVERY_S = 0.5  # previews cost little, but not nothing: at most two a second


def make_runner(pool, out_dir: Path):
    def run(job: Job) -> None:
        from ..image_output import save_png, slug
        from .preview import preview_data_url

        pipe = pool.get(job.model)
        p = dict(job.params)
        prompts = [p["prompt"]] if isinstance(p["prompt"], str) else list(p["prompt"])
        batches = -(-len(prompts) * int(p.get("num_images") or 1) // pipe.max_batch)
        state = {"batch": 0, "preview_at": 0.0}

        def on_step(step: int, total: int, latents) -> None:
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            changes = {"step": state["batch"] * total + step, "total_steps": total * batches}
            now = time.monotonic()
            if now - state["preview_at"] >= PREVIEW_EVERY_S or step in (1, total):
                changes["preview"] = preview_data_url(pipe, latents)
                state["preview_at"] = now
            if step == total:
                state["batch"] += 1
            job.touch(**changes)

        pipe.progress = False
        for image in pipe.iter_images(**p, **job.inputs, callback=on_step):
            info = image.info["latentdiff"]
            path = save_png(image, out_dir, f"{slug(info['prompt'])}-s{info['seed']}")
            job.images.append({"name": path.name, "url": f"/v1/images/{path.name}", "params": info})
            job.touch()

    return run
