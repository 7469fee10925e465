"""What a fine-tuning run writes: the run folder, checkpoint contents, samples, final model."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import FinetuneConfig
from .recipe import check_recipe, write_recipe
from .runfolder import check_run_folder, prepare_run_folder

# Everything a finetune run writes into OUT (run.json lists them); --overwrite removes these and nothing else.
RUN_FILES = ("checkpoints", "samples", "metrics.jsonl", "config.yaml", "skipped.txt", "model_index.json",
             "unet", "vae", "text_encoder", "tokenizer", "scheduler", "latentdiff.json",
             "pytorch_lora_weights.safetensors", "logs")


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


def write_trainable(d: Path, setup, named: dict, optimizer, lr_schedule, ema) -> None:
    """Checkpoint contents: trainable weights only (a LoRA checkpoint stays small), optimizer,
    LR schedule, EMA, and a from-scratch run's tokenizer."""
    from safetensors.torch import save_file

    save_file({k: p.detach().contiguous().cpu() for k, p in named.items()}, str(d / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), d / "optimizer.pt")
    torch.save(lr_schedule.state_dict(), d / "lr_schedule.pt")
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(d / "ema.safetensors"))
    if setup.from_scratch:
        setup.components.tokenizer.save_pretrained(str(d / "tokenizer"))


def _with_ema(trained: dict, ema):
    """Copy EMA weights into the trained modules (the run is over, so no need to restore)."""
    if ema is None:
        return
    with torch.no_grad():
        for key, tensor in ema.shadow.items():
            module, name = key.split(".", 1)
            trained[module].get_parameter(name).copy_(tensor)


def save_final(cfg: FinetuneConfig, out: Path, setup, trained: dict, ema) -> None:
    from ..lora import save_lora
    from ..models import save_components

    c = setup.components
    defaults = {**c.defaults, **cfg.sample_defaults}
    if cfg.method == "lora":
        save_lora(out, c.unet, c.text_encoder if "text_encoder" in trained else None, setup.base_ref, defaults)
        return
    _with_ema(trained, ema)
    for m in trained.values():
        m.eval()
    c.defaults = defaults
    save_components(c, out, c.scheduler_config.get("_class_name", "DDPMScheduler"))


@torch.no_grad()
def validate(cfg: FinetuneConfig, out: Path, setup, step: int, device) -> list[Path]:
    """Images for the validation prompts with fixed seeds, from the current (non-EMA) weights."""
    from ..images import save_png, slug
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

