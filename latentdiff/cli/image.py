"""Command line of the image workflows: generate's flags for starting from an image (img2img,
inpainting, outpainting), hires fix and the upscaler cascade, and `latentdiff upscale`.
No heavy imports at module level (`--help` must not import torch)."""

from __future__ import annotations

# flag dest -> ImageOptions field
_FIELDS = {"init_image": "image", "strength": "strength", "resize": "resize", "mask": "mask",
           "mask_blur": "mask_blur", "inpaint_area": "inpaint_area", "padding": "padding", "outpaint": "outpaint",
           "hires": "hires", "hires_strength": "hires_strength", "hires_steps": "hires_steps",
           "hires_upscaler": "hires_upscaler", "upscaler": "upscaler", "tile": "tile",
           "upscale": "upscale"}
# PNG metadata key -> ImageOptions field, for --from
_RECORDED = {"init_image": "image", "init_image_hash": "image_hash", "mask_hash": "mask_hash",
             **{k: k for k in ("strength", "resize", "mask", "mask_blur", "inpaint_area", "padding", "outpaint",
                               "hires", "hires_strength", "hires_steps", "hires_upscaler", "upscaler", "tile", "upscale")}}


def add_image_flags(p) -> None:
    g = p.add_argument_group("start from an image (img2img, inpainting, outpainting)")
    g.add_argument("--init-image", metavar="IMG", help="start from this picture (img2img); any size, read like finetune's images")
    g.add_argument("--strength", type=float, help="0 < S <= 1: how much of the picture is repainted (default 0.75; inpainting 1.0)")
    g.add_argument("--resize", choices=["crop", "fit", "stretch"],
                   help="how the picture reaches --width/--height: crop (cover, centre-crop; default), fit (pad with edges), stretch")
    g.add_argument("--mask", metavar="MASK", help="inpainting: white = repaint (any mode; resized to the picture)")
    g.add_argument("--mask-blur", type=int, metavar="PX", help="blur of the mask edge where the result is pasted back (default 4)")
    g.add_argument("--inpaint-area", choices=["full", "masked"], help="full (default), or masked: work on the masked region at full size")
    g.add_argument("--padding", type=int, metavar="PX", help="--inpaint-area masked: context pixels around the region (default 32)")
    g.add_argument("--outpaint", metavar="L,R,T,B", help="grow the canvas by these pixels and paint the new area")
    h = p.add_argument_group("hires fix and the upscaler cascade")
    h.add_argument("--hires", type=float, metavar="SCALE", help="generate at the native size, upscale by SCALE, img2img at the target")
    h.add_argument("--hires-strength", type=float, metavar="S", help="strength of the hires pass (default 0.5)")
    h.add_argument("--hires-steps", type=int, metavar="N", help="steps of the hires pass (default: --steps)")
    h.add_argument("--hires-upscaler", metavar="latent|lanczos|MODEL", help="how the first pass is upscaled (default latent)")
    h.add_argument("--upscaler", metavar="MODEL", help="a diffusion upscaler run on each finished image (the cascade)")
    h.add_argument("--tile", type=int, metavar="PX", help="upscale in overlapping tiles of PX output pixels (bounds memory)")
    h.add_argument("--no-upscale", dest="upscale", action="store_false", default=None,
                   help="skip the upscaler that the model's latentdiff.json names (its cascade's second stage)")


def image_options(args, recorded: dict | None = None) -> dict:
    """ImageOptions keyword arguments: recorded values (from --from) overridden by flags given.
    A new --init-image / --mask drops the recorded picture's hash check."""
    opts = {}
    for key, field in _RECORDED.items():
        if recorded and recorded.get(key) is not None:
            opts[field] = recorded[key]
    flags = {field: getattr(args, dest) for dest, field in _FIELDS.items() if getattr(args, dest, None) is not None}
    if "image" in flags:
        opts.pop("image_hash", None)
    if "mask" in flags:
        opts.pop("mask_hash", None)
    return {**opts, **flags}


def add_upscale(sub) -> None:
    p = sub.add_parser("upscale", help="upscale an image with a diffusion upscaler (e.g. the SD x4 upscaler)",
                       description="Upscale IMAGE with a model in diffusers' StableDiffusionUpscalePipeline format. "
                                   "Prints the written PNG path on stdout.")
    p.add_argument("image", help="the picture to upscale")
    p.add_argument("--model", required=True, help="the upscaler: a diffusers folder or hub id")
    p.add_argument("--prompt", default="", help="what the picture shows (guides the detail; default: empty)")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--noise-level", type=int, help="noise added to the input, 0..max_noise_level (default: the model's latentdiff.json, else 20)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's latentdiff.json, else 75)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's latentdiff.json, else 9.0)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--scheduler", help="a scheduler name as for generate (default: the model's)")
    p.add_argument("--tile", type=int, metavar="PX", help="work in overlapping tiles of PX output pixels (bounds memory)")
    p.add_argument("--out", default="outputs", help="output folder (default: outputs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (weights_only=True)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no loading line")
    p.set_defaults(func=cmd_upscale)


def cmd_upscale(args) -> int:
    import sys
    from pathlib import Path

    from latentdiff.images.write import save_png, slug
    from latentdiff.runtime.files import check_out_dir
    from latentdiff.pipeline import Pipeline
    from latentdiff.workflows.source import read_picture

    read_picture(args.image, "image to upscale")  # a bad file is refused before the model loads
    check_out_dir(Path(args.out))
    if not args.quiet:
        from latentdiff.formats.preflight import loading_line

        print(f"latentdiff: {loading_line(args.model)}", file=sys.stderr, flush=True)
    pipe = Pipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    pipe.progress = not args.quiet
    if not pipe.is_upscaler:
        from latentdiff.errors import UsageError

        raise UsageError(f"{args.model} is not a diffusion upscaler; `latentdiff upscale` needs a model in "
                         "StableDiffusionUpscalePipeline format")
    image = pipe.upscale(args.image, prompt=args.prompt, negative_prompt=args.negative, steps=args.steps,
                         guidance=args.guidance, noise_level=args.noise_level, seed=args.seed,
                         scheduler=args.scheduler, tile=args.tile)
    print(save_png(image, Path(args.out), f"{slug(Path(args.image).stem)}-up-s{args.seed}"), flush=True)
    return 0
