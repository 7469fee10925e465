"""`latentdiff detect IMAGE --module canny`: a control map from a picture, as A1111's
`/controlnet/detect` makes it (images/preprocess.py), written as a new PNG in --out.
No heavy imports at module level (`--help` must not import torch)."""

from __future__ import annotations

from latentdiff.config.control_flags import MODULES, RES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="make a control map (canny edges, lineart, ...) from a picture",
        description="Preprocess IMAGE into a control map as A1111's ControlNet extension does, for "
        "generate --control MAP:MODEL (or give generate the picture with --control-module). Prints the "
        "written PNG path on stdout; files are never overwritten.",
    )
    p.add_argument("image", help="the picture")
    p.add_argument(
        "--module",
        default="canny",
        metavar="NAME",
        help=f"the preprocessor, by its A1111 name: {', '.join(MODULES)} (default canny)",
    )
    p.add_argument(
        "--threshold-a",
        type=float,
        metavar="A",
        help="A1111's first slider (canny: low threshold, default 100; threshold: 127; scribble_xdog: 32; "
        "tile_resample: down-sampling rate, 1; blur_gaussian: sigma, 9; recolor: gamma, 1)",
    )
    p.add_argument(
        "--threshold-b", type=float, metavar="B", help="A1111's second slider (canny: high threshold, default 200)"
    )
    p.add_argument(
        "--resolution",
        type=int,
        metavar="PX",
        help=f"processor resolution: the short side the preprocessor works at ({RES.lo}..{RES.hi}, default 512)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="shuffle's noise, as generate --seed draws it for that unit (default 0)"
    )
    p.add_argument("--out", default="outputs", help="output folder (default: outputs/); files are never overwritten")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    # Imported when the command runs, not at start-up: `latentdiff --help` must not import numpy or PIL.
    from latentdiff.config.control_flags import module, resolution, thresholds
    from latentdiff.images.preprocess import preprocess
    from latentdiff.images.write import slug
    from latentdiff.runtime.files import check_out_dir, write_new
    from latentdiff.workflows.source import read_picture

    m = module(args.module, "--module")
    res = resolution(m, args.resolution, "--resolution")
    a, b = thresholds(m, args.threshold_a, args.threshold_b, "--threshold-a/--threshold-b:")
    if args.seed < 0:
        # Imported when the command runs, not at start-up: errors is light, but kept with its use.
        from latentdiff.errors import UsageError

        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    picture, _ = read_picture(args.image, "image")
    check_out_dir(Path(args.out))
    out = preprocess(picture, m.name, res, a, b, args.seed)
    stem = f"{slug(Path(args.image).stem)}-{m.name}"
    path = write_new(Path(args.out), stem, ".png", lambda f: out.save(f, format="PNG"))
    print(path, flush=True)
    return 0
