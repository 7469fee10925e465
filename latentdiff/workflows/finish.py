"""After the loop: paste an inpainting result over its source, run the cascade's stages, and
say in the metadata what was done."""

from __future__ import annotations

from latentdiff.workflows.a1111_masked import lay_over, of_source
from latentdiff.workflows.cascade import run_cascade, stages_of


def finish(pipe, image, prompt: str, seed: int, request):
    """(final image, metadata to add) for one decoded image of a run (`request`: config.request.Request)."""
    extra = {}
    src, opts = request.source, request.options
    if src is not None:
        a1111 = request.a1111 is not None and src.mask is not None  # A1111's own path lays its result over
        image = lay_over(image, of_source(src)) if a1111 else src.paste(image)
        extra.update(src.record)
    if opts is None:
        return image, extra
    extra.update(opts.recorded())
    if opts.hires:
        extra["hires_size"] = list(image.size)
    stages = stages_of(pipe, opts)
    if stages:
        image, extra["cascade"] = run_cascade(pipe, image, prompt, seed, stages, opts.tile)
        extra["upscaled_size"] = list(image.size)
    return image, extra
