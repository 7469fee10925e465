"""Training-side subcommands (finetune, build-emoji, ...), registered by cli.py.
Like cli.py, nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse


def _bool_flag(p, name, help):
    p.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help)


def add_finetune(sub):
    p = sub.add_parser("finetune", help="teach a model your own pictures (LoRA or full)",
                       description="Fine-tune on a folder of captioned images. Flags override --config YAML.")
    p.add_argument("dataset", help="folder of images with captions (.txt beside each, metadata.jsonl or metadata.csv)")
    p.add_argument("--model", help="base model (dir or hub id), or an architecture YAML to train from scratch")
    p.add_argument("--out", help="run folder (checkpoints, samples, metrics, final model)")
    p.add_argument("--config", help="YAML recipe, e.g. configs/finetune/lora.yaml")
    p.add_argument("--method", choices=["lora", "full"])
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help="images per process per micro-step")
    p.add_argument("--grad-accum", type=int, help="micro-steps per optimizer step")
    p.add_argument("--lr", type=float)
    p.add_argument("--resolution", type=int)
    p.add_argument("--crop", choices=["center", "random"])
    _bool_flag(p, "--flip", "random horizontal flips")
    _bool_flag(p, "--buckets", "aspect-ratio bucketing instead of square crops")
    p.add_argument("--lora-rank", type=int)
    _bool_flag(p, "--train-text-encoder", "also train the text encoder (LoRA or full)")
    p.add_argument("--caption-dropout", type=float, help="probability of an empty caption (enables CFG)")
    p.add_argument("--missing-captions", choices=["error", "empty"])
    p.add_argument("--snr-gamma", type=float, help="min-SNR-gamma loss weighting (e.g. 5)")
    p.add_argument("--noise-offset", type=float)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--keep-checkpoints", type=int)
    p.add_argument("--validate-every", type=int, help="write sample images every N steps (0: never)")
    p.add_argument("--validation-prompts", metavar="FILE", help="one prompt per line")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    _bool_flag(p, "--gradient-checkpointing", "trade compute for memory")
    _bool_flag(p, "--use-8bit-adam", "bitsandbytes 8-bit AdamW")
    _bool_flag(p, "--cache", "cache VAE latents and frozen text embeddings (default: on)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", default=None, help="continue from the latest complete checkpoint")
    p.add_argument("--overwrite", action="store_true", default=None, help="start over, deleting the run in --out")
    _bool_flag(p, "--allow-pickle", "allow pickle weights for the base model")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    from .config import load_yaml, merge, read_prompts_file
    from .training.config import FinetuneConfig
    from .training.loop import finetune

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    if args.validation_prompts:
        flags["validation_prompts"] = read_prompts_file(args.validation_prompts)
    cfg = merge(FinetuneConfig, load_yaml(args.config), flags)
    import os

    out = finetune(cfg)
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch only the main process reports
        print(out, flush=True)
    return 0


def add_build_emoji(sub):
    p = sub.add_parser("build-emoji", help="render the Noto Color Emoji font into a training dataset")
    p.add_argument("out", help="dataset folder to write")
    p.add_argument("--emoji-test", help="path to Unicode's emoji-test.txt")
    p.add_argument("--font", help="path to NotoColorEmoji.ttf")
    p.set_defaults(func=cmd_build_emoji)


def cmd_build_emoji(args) -> int:
    from .emoji import main

    argv = [args.out] + (["--emoji-test", args.emoji_test] if args.emoji_test else []) + (["--font", args.font] if args.font else [])
    main(argv)
    return 0


def add_eval_emoji(sub):
    p = sub.add_parser("eval-emoji", help="nearest-reference accuracy of a text-to-emoji model",
                       description="Generate training and held-out emoji names; score top-1/top-5 nearest-reference "
                                   "accuracy at 16x16, at guidance 1 and the model's guidance.")
    p.add_argument("dataset", help="emoji dataset folder (from `latentdiff build-emoji`)")
    p.add_argument("--model", help="model to evaluate (default: the shipped model)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, help="CFG scale compared with guidance 1 (default: the model's)")
    p.add_argument("--n-train", type=int, default=300, help="training names drawn with a fixed seed")
    p.add_argument("--out", help="also write the results as JSON to this file")
    p.add_argument("--grid", metavar="PNG", help="also write a grid of sample images (the README's picture)")
    p.set_defaults(func=lambda a: _run_eval(a))


def _run_eval(args) -> int:
    from .emoji_eval import run

    run(args.dataset, args.model, args.steps, args.guidance, args.n_train, args.out, args.grid)
    return 0


def add_train_vae(sub):
    from .training.vae_cli import add_parser

    add_parser(sub)


def add_export(sub):
    p = sub.add_parser("export", help="write a diffusers-format model from a full fine-tuning run's checkpoint")
    p.add_argument("run", help="the run folder (finetune --out)")
    p.add_argument("--out", required=True, help="folder for the model")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest complete one)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA ones")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="storage dtype of the weights (default: fp32)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from .training.export import export_checkpoint

    print(export_checkpoint(args.run, args.out, args.step, not args.no_ema, args.dtype), flush=True)
    return 0


COMMANDS = [add_finetune, add_export, add_train_vae, add_build_emoji, add_eval_emoji]
