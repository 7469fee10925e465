"""Build what a fine-tuning run trains: the models (pretrained or from an architecture
config), which parameters are trainable (LoRA or full), and the optimizer. (Was training/setup.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import hub
from ..arch import build_components, is_arch_file, read_arch
from ..errors import UsageError
from ..lora import TEXT_TARGETS, UNET_TARGETS, add_adapters
from ..models import Components, load_components
from .config import FinetuneConfig


@dataclass
class Setup:
    components: Components
    base_ref: str | None  # model reference recorded with a LoRA
    from_scratch: bool
    train_text_encoder: bool


def load_models(cfg: FinetuneConfig, captions: list[str], tokenizer=None) -> Setup:
    if is_arch_file(cfg.model):
        if cfg.method != "full":
            raise UsageError("training from an architecture config needs --method full (there is no base to adapt)")
        arch = read_arch(cfg.model)
        comps = build_components(arch, captions, seed=cfg.seed, tokenizer=tokenizer)
        _check_upscaler(cfg, comps)
        # The latent diffusion recipe: the text encoder learns jointly with the UNet, unless it is an
        # existing model's (a cascade's stages share the base's encoder): then it trains only if asked.
        joint = not isinstance(arch["text_encoder"], str) or cfg.train_text_encoder
        return Setup(comps, None, from_scratch=True, train_text_encoder=joint)
    path = hub.resolve(cfg.model, cfg.allow_pickle)
    comps = load_components(path, cfg.allow_pickle)
    if comps.is_sdxl:
        raise UsageError(f"finetune does not train SDXL models yet ({cfg.model}); it trains SD 1.x/2.x models")
    _check_upscaler(cfg, comps)
    ref = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    return Setup(comps, ref, from_scratch=False, train_text_encoder=cfg.train_text_encoder)


def _check_upscaler(cfg: FinetuneConfig, comps: Components) -> None:
    from .upscaler import is_upscaler

    if cfg.validate_every and is_upscaler(comps):
        raise UsageError("--validate-every makes text-to-image samples, which a diffusion upscaler does not; "
                         "use `latentdiff export` and `latentdiff upscale` on a checkpoint instead")


def make_trainable(setup: Setup, cfg: FinetuneConfig) -> dict[str, torch.nn.Module]:
    """Freeze everything, then open the trainable part; returns {name: module} of trained modules."""
    c = setup.components
    for m in (c.unet, c.vae, c.text_encoder):
        m.requires_grad_(False)
    trained = {"unet": c.unet}
    if setup.train_text_encoder:
        trained["text_encoder"] = c.text_encoder
    if cfg.method == "lora":
        torch.manual_seed(cfg.seed)  # LoRA's random init: the same run must start the same way
        add_adapters(c.unet, cfg.lora_rank, UNET_TARGETS)
        if setup.train_text_encoder:
            add_adapters(c.text_encoder, cfg.lora_rank, TEXT_TARGETS)
    else:
        for m in trained.values():
            m.requires_grad_(True)
    for m in trained.values():
        m.train()
        # Trainable weights stay fp32 under mixed precision (autocast handles compute).
        for p in m.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        c.unet.enable_gradient_checkpointing()
        if setup.train_text_encoder:
            c.text_encoder.gradient_checkpointing_enable()
    return trained


def named_trainable(trained: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    return {f"{k}.{n}": p for k, m in trained.items() for n, p in m.named_parameters() if p.requires_grad}


def make_optimizer(params: list, cfg: FinetuneConfig):
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UsageError("--use-8bit-adam needs bitsandbytes: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
