"""What a fine-tuning run writes: its entries in the run folder (guarded by runfolder.py), samples,
the final model: a LoRA folder, a diffusers model, or a diffusers ControlNet folder (checkpoint
files: state.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import UsageError
from latentdiff.formats.lora_flux_kohya import save_flux_kohya
from latentdiff.formats.lora_kohya import KOHYA_FILE, save_kohya
from latentdiff.formats.lora_merge import LORA_FILE, save_lora, write_lora_meta
from latentdiff.images.write import save_png, slug
from latentdiff.pipeline import Pipeline
from latentdiff.runtime.device import DTYPES
from latentdiff.runtime.files import as_umask_allows
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.controlnet import validation_control
from latentdiff.training.flow import flow_family, save_flow_lora, writes_kohya
from latentdiff.training.prior import save_prior

# Everything a finetune run writes into OUT (run.json lists them, with the kohya LoRA file: run_files);
# --overwrite removes these and nothing else. lora_kohya.safetensors: the kohya file's name before --output-name.
RUN_FILES = (
    "checkpoints",
    "samples",
    "metrics.jsonl",
    "config.yaml",
    "skipped.txt",
    "model_index.json",
    "unet",
    "vae",
    "text_encoder",
    "tokenizer",
    "text_encoder_2",
    "tokenizer_2",
    "scheduler",
    "latentdiff.json",
    "pytorch_lora_weights.safetensors",
    "lora_kohya.safetensors",
    "logs",
    "config.json",  # --method controlnet: OUT is a diffusers ControlNet folder
    "diffusion_pytorch_model.safetensors",
    "prior",  # --method prior: OUT is a Kandinsky 2.2 prior folder
    "image_encoder",
    "image_processor",
    "image_normalizer",  # an unCLIP decoder's parts beside its UNet
    "image_noising_scheduler",
    "feature_extractor",
)


def kohya_file(cfg: FinetuneConfig) -> str:
    """OUT/NAME.safetensors: A1111 and ComfyUI name a LoRA by its file, and credit that name in infotext."""
    return f"{cfg.output_name}.safetensors"


def run_files(cfg: FinetuneConfig) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*RUN_FILES, kohya_file(cfg))))


def save_model(cfg: FinetuneConfig, out: Path, state, dtype: str | None = None) -> None:
    """The usable result of a state's weights (after `state.use_ema()` where wanted): a LoRA folder, a
    diffusers model, or a diffusers ControlNet folder (`dtype`: fp16 or bf16 stores half-size weights)."""
    if cfg.method == "prior":
        save_prior(out, state)
        return
    c = state.setup.components
    defaults = {**c.defaults, **cfg.sample_defaults}
    if cfg.method == "lora":
        save_lora_files(cfg, out, state, defaults)
        return
    if cfg.method == "controlnet":
        save_controlnet(out, state.modules["controlnet"], dtype)
        return
    for m in state.modules.values():
        m.eval()
    c.defaults = defaults
    Pipeline(c, torch.device("cpu"), torch.float32, place=False).save_pretrained(out, dtype=dtype)


def save_controlnet(out: Path, net, dtype: str | None) -> None:
    """OUT/config.json + OUT/diffusion_pytorch_model.safetensors, as diffusers' ControlNetModel saves
    itself (a copy casts to `dtype`: the trained module keeps its fp32 weights)."""
    import copy

    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
    net.eval()
    if dtype not in (None, "fp32"):
        net = copy.deepcopy(net).to(DTYPES[dtype])
    net.save_pretrained(out, safe_serialization=True)
    as_umask_allows(out / "config.json", out / "diffusion_pytorch_model.safetensors")


def save_lora_files(cfg: FinetuneConfig, out: Path, state, defaults: dict) -> None:
    """OUT/NAME.safetensors (kohya, NAME from --output-name) and/or OUT/pytorch_lora_weights.safetensors
    per --lora-format, and OUT/latentdiff.json naming the one latentdiff loads (the diffusers file when
    there is one)."""
    c, kohya = state.setup.components, kohya_file(cfg)
    written = {"kohya": [kohya], "diffusers": [LORA_FILE], "both": [kohya, LORA_FILE]}[cfg.lora_format]
    if flow_family(c):  # kohya's layout for Flux.1 only (training/flow.py refuses --lora-format kohya elsewhere)
        written = written if writes_kohya(c) else [LORA_FILE]
        if LORA_FILE in written:
            save_flow_lora(out, state)
        if kohya in written:
            save_flux_kohya(out / kohya, c.unet, kohya_metadata(cfg, out, state))
        write_lora_meta(out, LORA_FILE if LORA_FILE in written else kohya, state.setup.base_ref, defaults)
    else:
        if kohya in written:
            save_kohya(out / kohya, state.modules, kohya_metadata(cfg, out, state), components=c)
        te, te2 = (state.modules.get(name) for name in ("text_encoder", "text_encoder_2"))
        loads = LORA_FILE if LORA_FILE in written else kohya
        save_lora(out, c.unet, te, state.setup.base_ref, defaults, text_encoder_2=te2, weights=loads)
    # Left by this run before a --resume with another --lora-format, or by a run from before --output-name.
    for name in {kohya, KOHYA_FILE, LORA_FILE} - set(written):
        (out / name).unlink(missing_ok=True)


def kohya_metadata(cfg: FinetuneConfig, out: Path, state) -> dict:
    """The `ss_*` entries kohya's train_network.py records that a latentdiff run knows (save_kohya
    adds the network's and the base model's)."""
    base = state.setup.base_ref or cfg.model
    return {
        "ss_output_name": cfg.output_name,
        "ss_sd_model_name": Path(str(base)).name,
        "ss_resolution": f"({cfg.resolution}, {cfg.resolution})",
        "ss_learning_rate": cfg.lr,
        "ss_lr_scheduler": cfg.lr_schedule,
        "ss_lr_warmup_steps": cfg.warmup_steps,
        "ss_max_train_steps": cfg.max_steps,
        "ss_steps": state.step,
        "ss_seed": cfg.seed,
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_noise_offset": cfg.noise_offset,
        "ss_min_timestep": cfg.min_timestep,
        "ss_max_timestep": cfg.max_timestep,
        "ss_training_comment": "latentdiff finetune --method lora",
    }


@torch.no_grad()
def validate(cfg: FinetuneConfig, out: Path, state, step: int, device, control_image=None) -> list[Path]:
    """Images for the validation prompts with fixed seeds, from the current (non-EMA) weights; a
    ControlNet run's are steered by `control_image` (its first row's) through the ControlNet."""
    prompts = cfg.validation_prompts or ["a photo"]
    c = state.setup.components
    net = state.modules.get("controlnet")
    modes = [(m, m.training) for m in (c.unet, net) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        pipe = Pipeline(c, device, torch.float32, place=False)
        pipe.progress = False
        controls = [validation_control(control_image, net, c.unet.dtype)] if net is not None else None
        images = pipe(prompts, steps=cfg.validation_steps, seed=cfg.seed, controls=controls)
    finally:
        for m, was_training in modes:
            m.train(was_training)
    return [save_png(im, out / "samples", f"step{step:08d}-{slug(p)}") for im, p in zip(images, prompts)]
