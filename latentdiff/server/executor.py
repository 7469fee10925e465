"""What the worker does with a job: pick the model, generate with a step callback (progress,
previews, cancellation), and write every image as soon as it exists."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

from latentdiff.errors import Cancelled
from latentdiff.server.a1111_flow import on_family
from latentdiff.server.a1111_pixels import masked_off_path, on_a1111_path
from latentdiff.server.jobs import Job

log = logging.getLogger("latentdiff.server")
PREVIEW_EVERY_S = 0.5  # previews cost little, but not nothing: at most two a second
FAR_ABOVE_NATIVE = 2  # a side this many times the model's native one gets a warning


def make_runner(pool, out_dir: Path, prepare=None):
    """`prepare(pipe)`: run on the worker before each job (the server's embeddings folder)."""
    vaes = {}  # the sd_vae last loaded, by (path, device, dtype): one kept

    def run(job: Job) -> None:
        # Imported with the first job: they import torch, which the server loads with its first model.
        from latentdiff.images.write import save_png, slug
        from latentdiff.server.preview import preview_data_url

        pipe = pool.get(job.model)
        if prepare is not None:
            prepare(pipe)
        p = dict(job.params)
        refiner = p.pop("refiner", None), p.pop("refiner_start", None)
        vae = p.pop("vae", None)
        if job.source == "a1111":  # Forge's distilled CFG, A1111's sampler on a flow-matching model
            p = on_family(pipe, p)
            p.pop("distilled_cfg_scale", None)  # no effect on a model without embedded guidance, as in Forge
        if job.a1111_rng is not None:  # A1111's own path where it runs this request (a1111_pixels.py)
            chosen, note = on_a1111_path(pipe, p, job.a1111_rng)
            p.update(chosen)
            job.touch(path_note=note or job.path_note)
            if not chosen:  # diffusers' path after all: its masked content (a1111.py's, with the model unknown)
                job.touch(warnings=[*job.warnings, *masked_off_path(p)])
        note = size_warning(pipe.native_size, p.get("width"), p.get("height"))
        if note:
            log.warning("job %s: %s", job.id, note)
            job.touch(warnings=[*job.warnings, note])
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
        job.touch(stops_mid_step=not pipe.compiled)
        with cancel_points(pipe, job.cancel), refined(pool, pipe, *refiner), vae_swapped(pipe, vae, vaes):
            # the decoded pictures and control units replace what the job shows of them
            for image in pipe.iter_images(**{**p, **job.inputs.decode(controls=True)}, callback=on_step):
                info = image.info["latentdiff"]
                path = save_png(image, out_dir, f"{slug(info['prompt'])}-s{info['seed']}")
                job.images.append({"name": path.name, "url": f"/v1/images/{path.name}", "params": info})
                job.touch()

    return run


@contextmanager
def refined(pool, pipe, name: str | None, start: float | None):
    """While the block runs, `pipe` hands its latents to the folder's model `name` (an SDXL refiner)
    after the fraction `start` of the denoising (A1111's refiner_checkpoint); then as it was."""
    if name is None:
        yield
        return
    before = pipe.refiner, pipe.refiner_start
    refiner = pool.get(name)
    refiner.progress = False
    pipe.set_refiner(refiner, start)
    try:
        yield
    finally:
        pipe.refiner, pipe.refiner_start = before


@contextmanager
def vae_swapped(pipe, path: str | None, cache: dict):
    """While the block runs, `pipe` decodes with the VAE at `path` (A1111's sd_vae; None: its own)."""
    if path is None:
        yield
        return
    # Imported with the first job naming a VAE: they import torch (loaded with the first model).
    from latentdiff.formats.vae import load_vae_ref
    from latentdiff.runtime.device import use_channels_last, wants_channels_last_vae
    from latentdiff.runtime.placement import vae_dtype

    c = pipe.components
    key = (path, str(pipe.device), str(pipe.dtype))
    if key not in cache:
        cache.clear()
        vae = load_vae_ref(path, c.vae.config, pipe.allow_pickle)
        cache[key] = vae.to(device=pipe.device, dtype=vae_dtype(pipe.dtype, vae.config, pipe.device)).eval()
        if wants_channels_last_vae(pipe.device, cache[key].dtype):  # in the layout Pipeline.place_on gives its own
            use_channels_last(cache[key])
    before = c.vae, pipe.vae_ref
    c.vae, pipe.vae_ref = cache[key], path
    try:
        yield
    finally:
        c.vae, pipe.vae_ref = before


@contextmanager
def cancel_points(pipe, cancel):
    """While the block runs, a set `cancel` event stops the UNet before its next block (down, mid
    or up; a transformer's: each of its block lists' blocks), so a cancel takes a fraction of a step
    instead of the rest of it. A compiled UNet is one traced graph that hooks cannot enter: there the
    step callback stops after the step."""
    blocks = [] if pipe.compiled else _blocks(pipe.components.unet)

    def check(module, args):
        if cancel.is_set():
            raise Cancelled("cancelled")

    handles = [b.register_forward_pre_hook(check) for b in blocks if b is not None]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _blocks(denoiser) -> list:
    """A UNet's down, mid and up blocks; a transformer's blocks (those of its top-level ModuleLists)."""
    if hasattr(denoiser, "down_blocks"):
        return [*denoiser.down_blocks, denoiser.mid_block, *denoiser.up_blocks]
    lists = [m for m in denoiser.children() if type(m).__name__ == "ModuleList"]
    return [block for blocks in lists for block in blocks]


def size_warning(native: int, width: int | None, height: int | None) -> str | None:
    """One line when a requested side is FAR_ABOVE_NATIVE times the model's native size or more:
    A1111 clients send 512x512 whatever the model, which on a 64 px model is 64x the work."""
    width, height = width or native, height or native
    if max(width, height) < FAR_ABOVE_NATIVE * native:
        return None
    work = width * height / native**2
    return (
        f"{width}x{height} is far above this model's native {native}x{native}: expect repeated or broken "
        f"shapes and about {work:.0f}x the time of a native image; leave width/height out (or send "
        f"{native}) for the native size"
    )
