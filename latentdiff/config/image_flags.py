"""`generate`'s flags for the image options (start from an image, hires fix, the upscaler cascade), each
named by its `ImageOptions` field (workflows/options.py, not imported here: `--help` stays light), and how
they meet the values an image recorded (`--from`)."""

from __future__ import annotations

from latentdiff.config.flags import Flag

_START = "start from an image (img2img, inpainting, outpainting)"
_HIRES = "hires fix and the upscaler cascade"
# generate's flags for `image_options`, each named by its ImageOptions field (workflows/options.py)
IMAGE_FLAGS = (
    Flag(
        "--init-image",
        "start from this picture (img2img); any size, read like finetune's images",
        dict(dest="image", metavar="IMG"),
        _START,
    ),
    Flag(
        "--strength",
        "0 < S <= 1: how much of the picture is repainted (default 0.75; inpainting 1.0)",
        dict(type=float),
        _START,
    ),
    Flag(
        "--resize",
        "how the picture reaches --width/--height: crop (cover, centre-crop; default), fit (pad with edges), stretch",
        dict(choices=["crop", "fit", "stretch"]),
        _START,
    ),
    Flag("--mask", "inpainting: white = repaint (any mode; resized to the picture)", dict(metavar="MASK"), _START),
    Flag(
        "--mask-blur",
        "blur of the mask edge where the result is pasted back (default 4)",
        dict(type=int, metavar="PX"),
        _START,
    ),
    Flag(
        "--inpaint-area",
        "full or whole (A1111's Whole picture; default), or masked (its Only masked): work on the masked "
        "region at full size",
        dict(choices=["full", "whole", "masked"]),
        _START,
    ),
    Flag(
        "--padding",
        "--inpaint-area masked: context pixels around the region (default 32; A1111's Only masked padding)",
        dict(type=int, metavar="PX"),
        _START,
        aliases=("--only-masked-padding",),
    ),
    Flag(
        "--masked-content",
        "what the masked area starts from: original (default); on A1111's own path also fill, "
        "latent_noise, latent_nothing (A1111's Masked content)",
        dict(choices=["original", "fill", "latent_noise", "latent_nothing"]),
        _START,
    ),
    Flag("--outpaint", "grow the canvas by these pixels and paint the new area", dict(metavar="L,R,T,B"), _START),
    Flag(
        "--hires",
        "generate at the native size, upscale by SCALE, img2img at the target",
        dict(type=float, metavar="SCALE"),
        _HIRES,
    ),
    Flag("--hires-strength", "strength of the hires pass (default 0.5)", dict(type=float, metavar="S"), _HIRES),
    Flag("--hires-steps", "steps of the hires pass (default: --steps)", dict(type=int, metavar="N"), _HIRES),
    Flag(
        "--hires-upscaler",
        "how the first pass is upscaled (default latent)",
        dict(metavar="latent|lanczos|MODEL"),
        _HIRES,
    ),
    Flag(
        "--hires-refiner-pass",
        "with --refiner on A1111's path: the pass the refiner takes over in (default second)",
        dict(choices=["second", "first", "both"]),
        _HIRES,
    ),
    Flag(
        "--upscaler",
        "a cascade stage run on each finished image: a diffusion upscaler or pixel SR stage folder, with "
        "optional ,steps=N,guidance=G,noise_level=L; repeat for more stages, in order",
        dict(metavar="DIR", action="append"),
        _HIRES,
    ),
    Flag(
        "--tile",
        "upscale in overlapping tiles of PX output pixels (bounds memory)",
        dict(type=int, metavar="PX"),
        _HIRES,
    ),
    Flag(
        "--no-upscale",
        "skip the upscaler that the model's latentdiff.json names (its cascade's second stage)",
        dict(dest="upscale", action="store_false"),
        _HIRES,
    ),
)
# PNG metadata key -> ImageOptions field, for --from
RECORDED_IMAGE_OPTIONS = {
    "init_image": "image",
    "init_image_hash": "image_hash",
    "mask_hash": "mask_hash",
    **{
        k: k
        for k in (
            "strength",
            "resize",
            "mask",
            "mask_blur",
            "inpaint_area",
            "padding",
            "masked_content",
            "outpaint",
            "hires",
            "hires_strength",
            "hires_steps",
            "hires_upscaler",
            "hires_refiner_pass",
            "upscaler",
            "tile",
            "upscale",
        )
    },
}


def image_options(flags: dict, recorded: dict | None = None) -> dict:
    """ImageOptions keyword arguments: recorded values (from --from) overridden by the flags given.
    A new --init-image / --mask drops the recorded picture's hash check; a recorded strength without
    a picture (an A1111 img2img line) waits for --init-image."""
    opts = {
        field: recorded[key]
        for key, field in RECORDED_IMAGE_OPTIONS.items()
        if recorded and recorded.get(key) is not None
    }
    if "image" not in opts and "image" not in flags:
        opts.pop("strength", None)  # an A1111 img2img line's: it applies once --init-image is given
    if "image" in flags:
        opts.pop("image_hash", None)
    if "mask" in flags:
        opts.pop("mask_hash", None)
    return {**opts, **flags}
