"""Command line of `latentdiff train-vae` (and `python -m latentdiff.training.vae`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentdiff.errors import LatentDiffError
from latentdiff.training.vae import VaeTrainConfig, __doc__ as VAE_DOC, train_vae


# --- command line ----------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="folder of images (+ metadata.jsonl); split=heldout rows are only evaluated")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, vae/, metrics.jsonl, eval.json, config.yaml")
    p.add_argument("--config", help="YAML with the recipe and a `vae:` section of AutoencoderKL arguments "
                   "(with --resume, default: the run's own config.yaml)")
    p.add_argument("--max-steps", type=int, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed for weights, batch order and noise")
    p.add_argument("--mixed-precision", choices=("no", "bf16"), help="bf16 autocast (weights stay fp32)")
    p.add_argument("--num-threads", type=int, help="torch CPU threads (default: one per core)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the latest checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", default=None, help="delete the run already in --out")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train-vae` on a subparsers object (cli_train.COMMANDS entry)."""
    p = subparsers.add_parser("train-vae", help="train the latent autoencoder (AutoencoderKL)",
                              description="Train an AutoencoderKL on a folder of images. "
                                          "Prints the saved diffusers VAE folder on stdout.")
    _add_arguments(p)
    p.set_defaults(func=cmd_train_vae)
    return p


def cmd_train_vae(args) -> int:
    from latentdiff.config import load_yaml, merge

    flags = dict(vars(args))  # merge() keeps only VaeTrainConfig's fields
    config = args.config
    if args.resume and config is None and (Path(args.out) / "config.yaml").is_file():
        config = flags["config"] = str(Path(args.out) / "config.yaml")  # the run's own recipe
    cfg = merge(VaeTrainConfig, load_yaml(config), flags)
    train_vae(cfg)
    print(Path(cfg.out) / "vae")
    return 0


def main(argv=None) -> int:
    """`python -m latentdiff.training.vae DATASET --out DIR ...`, same flags as `latentdiff train-vae`."""
    parser = argparse.ArgumentParser(prog="python -m latentdiff.training.vae", description=VAE_DOC.split("\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_train_vae(args)
    except LatentDiffError as e:
        print(f"train-vae: error: {e}", file=sys.stderr)
        return e.exit_code

