"""`latentdiff generate`: prompts in, PNG files with their parameters out."""

from __future__ import annotations

from pathlib import Path

from .config import GenerateConfig


def run_generate(cfg: GenerateConfig, recorded_device: str | None = None) -> list[Path]:
    """Render every prompt of `cfg`, writing each image as soon as it exists (so an interrupt
    loses at most the image in progress) and printing its path on stdout."""
    from .images import save_png, slug
    from .pipeline import Pipeline
    from .runtime import resolve_device

    dtype = cfg.dtype
    if recorded_device and resolve_device(cfg.device).type != recorded_device.split(":")[0]:
        dtype = "auto"  # a dtype recorded on another kind of device may not suit this one
    pipe = Pipeline.from_pretrained(cfg.model, device=cfg.device, dtype=dtype, allow_pickle=cfg.allow_pickle,
                                    compile=cfg.compile)
    pipe.progress = not cfg.quiet
    written = []
    for prompt in cfg.prompts:
        images = pipe.iter_images(prompt, negative_prompt=cfg.negative, steps=cfg.steps, guidance=cfg.guidance,
                      width=cfg.width, height=cfg.height, seed=cfg.seed, num_images=cfg.num_images,
                      scheduler=cfg.scheduler)
        for image in images:
            seed = image.info["latentdiff"]["seed"]
            path = save_png(image, Path(cfg.out), f"{slug(prompt)}-s{seed}")
            print(path, flush=True)
            written.append(path)
    return written
