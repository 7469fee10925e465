"""`latentdiff export RUN --out DIR`: a model or a LoRA from any checkpoint of a run."""

from __future__ import annotations


def add_parser(sub) -> None:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.training.config import LORA_FORMATS

    p = sub.add_parser("export", help="write a model (full run) or a LoRA (LoRA run) from any checkpoint of a run")
    p.add_argument("run", help="the run folder (finetune --out)")
    p.add_argument("--out", required=True, help="new folder for the model or LoRA")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest complete one)")
    p.add_argument("--no-ema", action="store_true", help="full runs: export the raw weights instead of the EMA ones")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="storage dtype of the weights (default: fp32)")
    p.add_argument(
        "--lora-format", choices=LORA_FORMATS, help="LoRA runs: the file layout (default: the run's own --lora-format)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.training.export import export_checkpoint

    print(export_checkpoint(args.run, args.out, args.step, not args.no_ema, args.dtype, args.lora_format), flush=True)
    return 0
