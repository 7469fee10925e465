"""Command line of `latentdiff train-vae` (and `python -m latentdiff.cli.train_vae`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentdiff.cli.main import main as cli_main
from latentdiff.training.vae import VaeTrainConfig, train_vae

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
    """`python -m latentdiff.cli.train_vae DATASET --out DIR ...`: `latentdiff train-vae` itself, so its
    usage errors and failures are the same one line and exit code (2, or 1)."""
    return cli_main(["train-vae", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
