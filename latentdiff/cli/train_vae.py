"""Command line of `latentdiff train-vae` (and `python -m latentdiff.cli.train_vae`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentdiff.errors import LatentDiffError
from latentdiff.training.vae import VaeTrainConfig, train_vae
from latentdiff.training.vae import __doc__ as VAE_DOC

# --- command line ----------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import add_flags

    p.add_argument(
        "--config",
        help="YAML with the recipe and a `vae:` section of AutoencoderKL arguments "
        "(with --resume, the run's own config.yaml is the base)",
    )
    add_flags(p, VaeTrainConfig, positional=("dataset",), skip=("config",))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train-vae` on a subparsers object."""
    p = subparsers.add_parser(
        "train-vae",
        help="train the latent autoencoder (AutoencoderKL)",
        description="Train an AutoencoderKL on a folder of images. Prints the saved diffusers VAE folder on stdout.",
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see cli/generate.py
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import given
    from latentdiff.training.recipe import build_config

    cfg = build_config(VaeTrainConfig, args.config, {**given(args, VaeTrainConfig), "config": args.config})
    train_vae(cfg)
    print(Path(cfg.out) / "vae")
    return 0


def main(argv=None) -> int:
    """`python -m latentdiff.cli.train_vae DATASET --out DIR ...`, same flags as `latentdiff train-vae`."""
    parser = argparse.ArgumentParser(prog="python -m latentdiff.cli.train_vae", description=VAE_DOC.split("\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LatentDiffError as e:
        print(f"train-vae: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
