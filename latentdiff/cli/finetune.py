"""`latentdiff finetune DATASET`: its flags are FinetuneConfig's fields (config/flags.py)."""

from __future__ import annotations


def add_parser(sub) -> None:
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import add_flags
    from latentdiff.training.config import FinetuneConfig

    p = sub.add_parser(
        "finetune",
        help="teach a model your own pictures (LoRA or full)",
        description="Fine-tune on a folder of captioned images. Flags override --config YAML; "
        "with --resume, the run's saved recipe is the base.",
    )
    p.add_argument("--config", help="YAML recipe, e.g. configs/finetune/lora.yaml")
    add_flags(p, FinetuneConfig, positional=("dataset",))
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see cli/generate.py
    # Imported when the command runs, not at start-up: `latentdiff --help` must not import torch.
    from latentdiff.config.flags import given
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune
    from latentdiff.training.recipe import build_config

    cfg = build_config(FinetuneConfig, args.config, given(args, FinetuneConfig))
    out = finetune(cfg)
    if os.environ.get("RANK", "0") == "0":  # under accelerate launch only the main process reports
        print(out, flush=True)
    return 0
