"""Command line of `latentdiff train-clip` (and `python -m latentdiff.cli.train_clip`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentdiff.cli.main import main as cli_main
from latentdiff.training.clip_config import ClipTrainConfig


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train-clip` on a subparsers object."""
    # Imported when the parser is built, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import add_flags

    p = subparsers.add_parser(
        "train-clip",
        help="train a CLIP image tower against a model's text encoder (contrastive)",
        description="Train a CLIP image tower (CLIPVisionModelWithProjection) against the text encoder of "
        "--model with CLIP's contrastive loss; OUT gets image_encoder/, feature_extractor/, text_encoder/, "
        "tokenizer/ and eval.json (top-1 retrieval on the held-out split). Prints OUT on stdout.",
    )
    p.add_argument(
        "--config", help="YAML with the recipe and a `vision:` section (with --resume, the run's own is the base)"
    )
    add_flags(p, ClipTrainConfig, positional=("dataset",), skip=("config",))
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see cli/generate.py
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import given
    from latentdiff.training.clip import train_clip
    from latentdiff.training.recipe import build_config

    cfg = build_config(ClipTrainConfig, args.config, {**given(args, ClipTrainConfig), "config": args.config})
    train_clip(cfg)
    print(Path(cfg.out))
    return 0


def main(argv=None) -> int:
    """`python -m latentdiff.cli.train_clip DATASET --model M --out DIR ...`: `latentdiff train-clip` itself."""
    return cli_main(["train-clip", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
