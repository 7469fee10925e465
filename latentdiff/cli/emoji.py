"""The shipped model's commands: `latentdiff build-emoji` (the dataset) and `eval-emoji` (its
evaluation). Nothing heavy is imported until a command runs."""

from __future__ import annotations

import sys
from pathlib import Path

MAX_SEEDS = 64  # each seed generates every evaluated name again
MAX_GRID_NAMES = 256  # a 16x16 grid


def add_parser(sub) -> None:
    add_build_emoji(sub)
    add_eval_emoji(sub)


def add_build_emoji(sub):
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.training.emoji.dataset import DESCRIPTION, add_arguments

    p = sub.add_parser(
        "build-emoji", help="render the Noto Color Emoji font into a training dataset", description=DESCRIPTION
    )
    add_arguments(p)
    p.set_defaults(func=run_build)


def run_build(args) -> int:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.training.emoji.dataset import build

    build(args)
    return 0


def add_eval_emoji(sub):
    p = sub.add_parser(
        "eval-emoji",
        help="nearest-reference accuracy of a text-to-emoji model",
        description="Generate training and held-out emoji names; score top-1/top-5 nearest-reference "
        "accuracy at 16x16, at guidance 1 and the model's guidance.",
    )
    p.add_argument("dataset", help="emoji dataset folder (from `latentdiff build-emoji`)")
    p.add_argument("--model", help="model to evaluate (default: the shipped model)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="CFG scale compared with guidance 1 (default: the model's)")
    p.add_argument(
        "--n-train", type=int, default=300, help="training names drawn with a fixed seed (default %(default)s)"
    )
    p.add_argument(
        "--n-heldout",
        type=int,
        metavar="N",
        help="score N held-out names drawn with a fixed seed, for a quick look (default: all of them)",
    )
    p.add_argument(
        "--seeds",
        default="0,1,2,3",
        metavar="S,S,...",
        help="generation seeds; results are given per seed and averaged (default %(default)s)",
    )
    p.add_argument("--out", help="also write the results as JSON to this file")
    p.add_argument("--grid", metavar="PNG", help="also write a grid of sample images (the README's picture)")
    p.add_argument(
        "--grid-names",
        metavar="NAME;NAME;...",
        help="the grid's emoji names, separated by ';' (default: 16 the shipped model draws well)",
    )
    p.add_argument("--grid-only", action="store_true", help="write the --grid picture and skip the evaluation")
    p.add_argument(
        "--cascade",
        metavar="DIR",
        help="instead: score the cascade's upscaler on the held-out names against DIR, the same names "
        "rendered at the cascade's size (build-emoji --size 128): PSNR/SSIM vs bicubic, top-1",
    )
    p.add_argument("--upscaler", metavar="MODEL", help="with --cascade: this upscaler (default: the model's own)")
    p.add_argument(
        "--clip",
        metavar="RUN",
        help="instead: score a `train-clip` output's image and text towers by top-1 retrieval on the "
        "held-out names (and --n-train training names); no images are generated",
    )
    p.add_argument(
        "--prior",
        metavar="DIR",
        help="instead: score a DALL-E 2 prior (a Kandinsky 2.2 prior folder) on the held-out names: cosine "
        "between predicted and true CLIP image embeddings, retrieval top-1; with --model DECODER (a Stable "
        "unCLIP decoder) also the top-1 of images drawn through prior and decoder",
    )
    p.add_argument("--prior-steps", type=int, metavar="N", help="with --prior: the prior's sampling steps (default 25)")
    p.add_argument("--prior-guidance", type=float, metavar="G", help="with --prior: the prior's CFG scale (default 4)")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flag_types import INT_MAX, number, shown
    from latentdiff.errors import UsageError
    from latentdiff.training.emoji.evaluate import run

    seeds = tuple(dict.fromkeys(number(s) for s in args.seeds.split(",")))
    if not all(type(s) is int for s in seeds):
        raise UsageError(f"--seeds takes whole numbers separated by commas, got {shown(args.seeds)!r}")
    if len(seeds) > MAX_SEEDS:
        raise UsageError(f"--seeds: at most {MAX_SEEDS} seeds (each one generates every name again), got {len(seeds)}")
    if min(seeds) < 0 or max(seeds) > INT_MAX:
        raise UsageError(f"--seeds takes seeds from 0 to {INT_MAX}, got {shown(args.seeds)!r}")
    if args.n_train < 0 or (args.n_heldout is not None and args.n_heldout < 0):
        raise UsageError("--n-train and --n-heldout take a count >= 0")
    if args.upscaler and not args.cascade:
        raise UsageError("--upscaler goes with --cascade DIR")
    names = [n.strip() for n in args.grid_names.split(";") if n.strip()] if args.grid_names is not None else None
    if (names is not None or args.grid_only) and not args.grid:
        raise UsageError("--grid-names and --grid-only go with --grid PNG")
    if names is not None and len(names) > MAX_GRID_NAMES:
        raise UsageError(f"--grid-names: at most {MAX_GRID_NAMES} names in one grid, got {len(names)}")
    if names == []:
        raise UsageError("--grid-names takes emoji names separated by ';', got none")
    if (args.prior_steps is not None or args.prior_guidance is not None) and not args.prior:
        raise UsageError("--prior-steps and --prior-guidance go with --prior DIR")
    if args.clip:
        return _eval_clip(args)
    if args.prior:
        return _eval_prior(args, seeds)
    if args.cascade:
        # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
        from latentdiff.training.emoji.cascade_eval import run_cascade

        run_cascade(
            args.dataset,
            args.cascade,
            args.model,
            args.upscaler,
            args.steps,
            args.guidance,
            seeds,
            args.out,
            args.n_heldout,
        )
    else:
        run(
            args.dataset,
            args.model,
            args.steps,
            args.guidance,
            args.n_train,
            args.out,
            args.grid,
            seeds,
            names,
            args.grid_only,
            args.n_heldout,
        )
    return 0


def _eval_clip(args) -> int:
    """`eval-emoji DATASET --clip RUN`: retrieval of a CLIP pair, printed and written to --out."""
    import json

    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.errors import UsageError
    from latentdiff.training.clip_eval import evaluate_folder, summary

    others = [f for f, v in (("--cascade", args.cascade), ("--grid", args.grid), ("--model", args.model)) if v]
    if others:
        raise UsageError(f"--clip scores a CLIP pair on its own; drop {', '.join(others)}")
    result = evaluate_folder(args.dataset, args.clip, args.n_train)
    print(f"eval-emoji: {summary(result)}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _eval_prior(args, seeds) -> int:
    """`eval-emoji DATASET --prior DIR [--model DECODER]`: the DALL-E 2 path's figures (prior_eval.py)."""
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.errors import UsageError
    from latentdiff.training.emoji.prior_eval import run_prior

    others = [f for f, v in (("--cascade", args.cascade), ("--grid", args.grid)) if v]
    if others:
        raise UsageError(f"--prior scores a prior (and --model's decoder through it); drop {', '.join(others)}")
    if args.prior_steps is not None and not 2 <= args.prior_steps <= 1000:
        raise UsageError(f"--prior-steps must be from 2 to 1000, got {args.prior_steps}")
    if args.prior_guidance is not None and not 0 <= args.prior_guidance <= 100:
        raise UsageError(f"--prior-guidance must be from 0 to 100, got {args.prior_guidance:g}")
    run_prior(args.dataset, args.prior, args.model, args.steps, args.guidance, args.prior_steps,
              args.prior_guidance, seeds, args.out, args.n_train, args.n_heldout)  # fmt: skip
    return 0
