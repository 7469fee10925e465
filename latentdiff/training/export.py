"""Turn any checkpoint of a run into a usable model, as kohya's per-epoch saves allow.

`latentdiff export RUN --out DIR [--step N] [--no-ema] [--dtype fp16]` rebuilds the run's models
from its config.yaml and loads the checkpoint's weights: a full (or from-scratch) run becomes a
diffusers-format model (EMA weights unless --no-ema), a LoRA run a LoRA folder
(pytorch_lora_weights.safetensors + latentdiff.json naming the base), so a model can be taken from
a run that is still going or was stopped early.
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
    from .setup import load_models, make_trainable, named_trainable

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UsageError(f"{run} is not a finetune run folder (no config.yaml)")
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg = merge(FinetuneConfig, saved, {})
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise UsageError(f"--out {out} exists and is not empty; export writes a new folder")
    done = ckpt.complete_checkpoints(run)
    chosen = [c for c in done if step is None or ckpt.read_manifest(c)["step"] == step]
    if not chosen:
        raise UsageError(f"no complete checkpoint{'' if step is None else f' for step {step}'} in {run}")
    last = chosen[-1]
    tokenizer = load_tokenizer(last / "tokenizer") if (last / "tokenizer").is_dir() else None
    setup = load_models(cfg, [], tokenizer=tokenizer)
    if cfg.method == "lora":
        return _export_lora(cfg, setup, last, Path(out), make_trainable, named_trainable)
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


def _export_lora(cfg, setup, last: Path, out: Path, make_trainable, named_trainable) -> Path:
    """The checkpoint's adapter weights, written as the run's final LoRA would be."""
    from ..lora import save_lora

    trained = make_trainable(setup, cfg)
    named = named_trainable(trained)
    with ckpt.damaged_checkpoint(last):
        weights = ckpt.load_tensors(last / "trainable.safetensors")
        with torch.no_grad():
            for key, p in named.items():
                p.copy_(weights[key])
    c = setup.components
    out.mkdir(parents=True, exist_ok=True)
    save_lora(out, c.unet, c.text_encoder if "text_encoder" in trained else None, setup.base_ref,
              {**c.defaults, **cfg.sample_defaults})
    return out
