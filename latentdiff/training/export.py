"""Turn any checkpoint of a run into a usable model, as kohya's per-epoch saves allow.

`latentdiff export RUN --out DIR [--step N] [--no-ema] [--dtype fp16]` rebuilds the run's models
from its config.yaml and loads the checkpoint's weights: a full (or from-scratch) run becomes a
diffusers-format model (EMA weights unless --no-ema), a LoRA run a LoRA folder
(latentdiff.json naming the base, with NAME.safetensors (the run's output_name) and/or pytorch_lora_weights.safetensors
as the run's --lora-format says, or `lora_format`), so a model can be taken from a run that is still
going or was stopped early.
"""

from __future__ import annotations

from pathlib import Path

from latentdiff.config.common import merge
from latentdiff.errors import UsageError
from latentdiff.models.assemble import load_tokenizer
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.recipe import RECIPE, saved_recipe


def export_checkpoint(
    run: Path,
    out: Path,
    step: int | None = None,
    use_ema: bool = True,
    dtype: str | None = None,
    lora_format: str | None = None,
) -> Path:
    # Here, not at the top: they import torch, which export.py must not pay for at start-up.
    from latentdiff.training.outputs import save_model
    from latentdiff.training.prior import prior_state
    from latentdiff.training.state import TrainState, load_models, read_trainable

    run = Path(run)
    saved = saved_recipe(run)
    if not saved:
        raise UsageError(f"{run} is not a finetune run folder (no {RECIPE}, or an empty one)")
    try:
        cfg = merge(FinetuneConfig, saved, {} if lora_format is None else {"lora_format": lora_format})
    except UsageError as e:
        raise UsageError(f"{run / RECIPE}: {e}") from None
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise UsageError(f"--out {out} exists and is not empty; export writes a new folder")
    done = ckpt.complete_checkpoints(run)
    chosen = [c for c in done if step is None or ckpt.read_manifest(c)["step"] == step]
    if not chosen:
        raise UsageError(f"no complete checkpoint{'' if step is None else f' for step {step}'} in {run}")
    last = chosen[-1]
    tokenizer = load_tokenizer(last / "tokenizer") if (last / "tokenizer").is_dir() else None
    if cfg.method == "prior":
        state = prior_state(cfg)
    else:
        state = TrainState.create(cfg, load_models(cfg, [], tokenizer=tokenizer))
    with ckpt.damaged_checkpoint(last):
        state.load_state_dict(read_trainable(last), last)
    if use_ema:
        state.use_ema()
    Path(out).mkdir(parents=True, exist_ok=True)
    save_model(cfg, Path(out), state, dtype)
    return Path(out)
