"""What a fine-tuning run writes: the run folder, checkpoint contents, samples, final model."""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import FinetuneConfig
from .recipe import check_recipe, write_recipe
from .runfolder import check_run_folder, prepare_run_folder

# Everything a finetune run writes into OUT (run.json lists them); --overwrite removes these and nothing else.
RUN_FILES = ("checkpoints", "samples", "metrics.jsonl", "config.yaml", "skipped.txt", "model_index.json",
             "unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler",
             "latentdiff.json", "pytorch_lora_weights.safetensors", "logs")


def check_out(cfg: FinetuneConfig) -> tuple[Path, str]:
    """Check OUT against --resume/--overwrite; touches nothing (every process runs it)."""
    action = check_run_folder(cfg.out, "finetune", RUN_FILES, dataset=cfg.dataset, model=cfg.model,
                              resume=cfg.resume, overwrite=cfg.overwrite)
    if action == "resume":
        check_recipe(cfg, cfg.out)
    return Path(cfg.out), action


def prepare_out(cfg: FinetuneConfig, action: str) -> Path:
    """On the main process: clear an overwritten run's files, write the resolved config.yaml."""
    out = prepare_run_folder(cfg.out, "finetune", RUN_FILES, action)
    write_recipe(cfg, out)
    return out


def write_trainable(d: Path, state) -> None:
    """Checkpoint files of a TrainState: trainable weights only (a LoRA checkpoint stays small),
    optimizer, LR schedule, EMA (its update count goes in the manifest), a from-scratch run's tokenizer."""
    from safetensors.torch import save_file

    sd = state.state_dict()
    save_file({k: p.contiguous().cpu() for k, p in sd["trainable"].items()}, str(d / "trainable.safetensors"))
    torch.save(sd["optimizer"], d / "optimizer.pt")
    torch.save(sd["lr_schedule"], d / "lr_schedule.pt")
    if sd["ema"] is not None:
        save_file({k: v.contiguous() for k, v in sd["ema"]["shadow"].items()}, str(d / "ema.safetensors"))
    if state.setup.from_scratch:
        state.setup.components.tokenizer.save_pretrained(str(d / "tokenizer"))


def read_trainable(d: Path) -> dict:
    """The TrainState.state_dict a checkpoint folder holds (inverse of write_trainable)."""
    manifest = ckpt.read_manifest(d)
    with ckpt.damaged_checkpoint(d):
        ema = d / "ema.safetensors"
        return {"step": manifest["step"], "trainable": ckpt.load_tensors(d / "trainable.safetensors"),
                "optimizer": ckpt.load_torch(d / "optimizer.pt"), "lr_schedule": ckpt.load_torch(d / "lr_schedule.pt"),
                "ema": {"shadow": ckpt.load_tensors(ema), "updates": int(manifest.get("ema_updates", 0))}
                if ema.is_file() else None}


def save_model(cfg: FinetuneConfig, out: Path, state, dtype: str | None = None) -> None:
    """The usable result of a state: a LoRA folder, or a diffusers model with the EMA weights."""
    from ..lora import save_lora
    from ..pipeline import Pipeline

    c = state.setup.components
    defaults = {**c.defaults, **cfg.sample_defaults}
    if cfg.method == "lora":
        te, te2 = (state.modules.get(name) for name in ("text_encoder", "text_encoder_2"))
        save_lora(out, c.unet, te, state.setup.base_ref, defaults, text_encoder_2=te2)
        return
    state.use_ema()
    for m in state.modules.values():
        m.eval()
    c.defaults = defaults
    Pipeline(c, torch.device("cpu"), torch.float32, place=False).save_pretrained(out, dtype=dtype)


@torch.no_grad()
def validate(cfg: FinetuneConfig, out: Path, setup, step: int, device) -> list[Path]:
    """Images for the validation prompts with fixed seeds, from the current (non-EMA) weights."""
    from ..image_output import save_png, slug
    from ..pipeline import Pipeline

    prompts = cfg.validation_prompts or ["a photo"]
    c = setup.components
    was_training = c.unet.training
    c.unet.eval()
    try:
        pipe = Pipeline(c, device, torch.float32, place=False)
        pipe.progress = False
        images = pipe(prompts, steps=cfg.validation_steps, seed=cfg.seed)
    finally:
        c.unet.train(was_training)
    return [save_png(im, out / "samples", f"step{step:08d}-{slug(p)}") for im, p in zip(images, prompts)]

