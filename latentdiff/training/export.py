"""Turn a checkpoint of a full (or from-scratch) run into a diffusers-format model.

`latentdiff export RUN --out DIR [--step N] [--no-ema] [--dtype fp16]` rebuilds the run's models
from its config.yaml, loads the checkpoint's EMA (or raw) weights and writes the usual layout,
so a model can be taken from a run that is still going or was stopped early.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UsageError
from . import checkpoint as ckpt


def export_checkpoint(run: Path, out: Path, step: int | None = None, use_ema: bool = True,
                      dtype: str | None = None) -> Path:
    import yaml
    from safetensors.torch import load_file

    from ..config import merge
    from ..models import load_tokenizer
    from ..pipeline import Pipeline
    from .config import FinetuneConfig
    from .setup import load_models

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UsageError(f"{run} is not a finetune run folder (no config.yaml)")
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg = merge(FinetuneConfig, saved, {})
    if cfg.method != "full":
        raise UsageError("export works on full fine-tuning runs; a LoRA run's OUT folder is already usable")
    done = ckpt.complete_checkpoints(run)
    chosen = [c for c in done if step is None or ckpt.read_manifest(c)["step"] == step]
    if not chosen:
        raise UsageError(f"no complete checkpoint{'' if step is None else f' for step {step}'} in {run}")
    last = chosen[-1]
    tokenizer = load_tokenizer(last / "tokenizer") if (last / "tokenizer").is_dir() else None
    setup = load_models(cfg, [], tokenizer=tokenizer)
    name = "ema.safetensors" if use_ema and (last / "ema.safetensors").is_file() else "trainable.safetensors"
    weights = load_file(str(last / name))
    modules = {"unet": setup.components.unet, "text_encoder": setup.components.text_encoder}
    with torch.no_grad():
        for key, tensor in weights.items():
            module, param = key.split(".", 1)
            modules[module].get_parameter(param).copy_(tensor)
    setup.components.defaults = {**setup.components.defaults, **cfg.sample_defaults}
    pipe = Pipeline(setup.components, torch.device("cpu"), torch.float32, place=False)
    pipe.save_pretrained(out, dtype=dtype)
    return Path(out)
