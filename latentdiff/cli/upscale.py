"""`latentdiff upscale IMAGE --model UPSCALER`: one picture through a diffusion upscaler.
No heavy imports at module level (`--help` must not import torch)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale an image with a diffusion upscaler (e.g. the SD x4 upscaler)",
        description="Upscale IMAGE with a model in diffusers' StableDiffusionUpscalePipeline format. "
        "Prints the written PNG path on stdout.",
    )
    p.add_argument("image", help="the picture to upscale")
    p.add_argument("--model", required=True, help="the upscaler: a diffusers folder or hub id")
    p.add_argument("--prompt", default="", help="what the picture shows (guides the detail; default: empty)")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument(
        "--noise-level",
        type=int,
        help="noise added to the input, 0..max_noise_level (default: the model's latentdiff.json, else 20)",
    )
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's latentdiff.json, else 75)")
    p.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default: the model's latentdiff.json, else 9.0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--scheduler", help="a scheduler name as for generate (default: the model's)")
    p.add_argument(
        "--tile", type=int, metavar="PX", help="work in overlapping tiles of PX output pixels (bounds memory)"
    )
    p.add_argument("--out", default="outputs", help="output folder (default: outputs/)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (weights_only=True)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no loading line")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.images.write import save_png, slug
    from latentdiff.pipeline import Pipeline
    from latentdiff.runtime.files import check_out_dir
    from latentdiff.workflows.source import read_picture

    read_picture(args.image, "image to upscale")  # a bad file is refused before the model loads
    check_out_dir(Path(args.out))
    if not args.quiet:
        # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
        from latentdiff.formats.preflight import loading_line

        print(f"latentdiff: {loading_line(args.model)}", file=sys.stderr, flush=True)
    pipe = Pipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle)
    pipe.progress = not args.quiet
    if not pipe.is_upscaler:
        # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
        from latentdiff.errors import UsageError

        raise UsageError(
            f"{args.model} is not a diffusion upscaler; `latentdiff upscale` needs a model in "
            "StableDiffusionUpscalePipeline format"
        )
    image = pipe.upscale(
        args.image,
        prompt=args.prompt,
        negative_prompt=args.negative,
        steps=args.steps,
        guidance=args.guidance,
        noise_level=args.noise_level,
        seed=args.seed,
        scheduler=args.scheduler,
        tile=args.tile,
    )
    print(save_png(image, Path(args.out), f"{slug(Path(args.image).stem)}-up-s{args.seed}"), flush=True)
    return 0
