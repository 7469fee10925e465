"""After the loop: paste an inpainting result over its source, run the cascade's upscaler, and
say in the metadata what was done."""

from __future__ import annotations


def finish(pipe, image, prompt: str, seed: int, request):
    """(final image, metadata to add) for one decoded image of a run (`request`: config.request.Request)."""
    extra = {}
    src, opts = request.source, request.options
    if src is not None:
        image = src.paste(image)
        extra.update(src.record)
    if opts is None:
        return image, extra
    extra.update(opts.recorded())
    if opts.hires:
        extra["hires_size"] = list(image.size)
    if opts.upscaler:
        image = pipe.upscale(image, prompt=prompt, seed=seed, tile=opts.tile, upscaler=opts.upscaler)
        extra["upscaled_size"] = list(image.size)
    return image, extra
