"""What a fine-tuning run trains, in one place: the models it starts from (`load_models`: a base
model, or an architecture config trained from scratch), their trainable part (LoRA adapters, all
weights, or a ControlNet beside the frozen model: the only difference between methods) and its optimizer, and `TrainState` (trainable
modules, optimizer, LR schedule, EMA, step) with `state_dict` / `load_state_dict` and the checkpoint
files that hold it. The loop steps it, checkpoints save it, resume and export load it back.
(Was training/setup.py, then trainable.py + state.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

import latentdiff.models.hub as hub
from latentdiff.errors import UsageError
from latentdiff.families.registry import family_of
from latentdiff.formats.lora_merge import TEXT_TARGETS, add_adapters
from latentdiff.models.assemble import load_components
from latentdiff.models.build import build_components, is_arch_file, read_arch
from latentdiff.models.components import Components
from latentdiff.runtime.compile import adamw_kwargs
from latentdiff.runtime.files import as_umask_allows
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.controlnet import make_controlnet
from latentdiff.training.flow import check_flow, lora_targets
from latentdiff.training.lr_schedule import make_lr_schedule
from latentdiff.training.unclip_decoder import as_decoder


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
    if comps.text_encoder is None:
        raise UsageError(
            f"{cfg.model} is an SDXL refiner (no first text encoder); finetune trains SD 1.x/2.x and SDXL base models"
        )
    _check_upscaler(cfg, comps)
    comps = as_decoder(cfg, comps)  # --method unclip: an SD model made a Stable unCLIP decoder
    check_flow(cfg, comps)
    comps = family_of(comps).adapt(comps)  # Qwen-Image's video VAE seen as an image VAE, as generation sees it
    ref = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    return Setup(comps, ref, from_scratch=False, train_text_encoder=cfg.train_text_encoder)


def _check_upscaler(cfg: FinetuneConfig, comps) -> None:
    if cfg.validate_every and family_of(comps).upscales:
        raise UsageError(
            "--validate-every makes text-to-image samples, which a diffusion upscaler does not; "
            "use `latentdiff export` and `latentdiff upscale` on a checkpoint instead"
        )


def make_trainable(setup: Setup, cfg: FinetuneConfig) -> dict[str, torch.nn.Module]:
    """Freeze everything, then open the trainable part; returns {name: module} of trained modules."""
    c = setup.components
    encoders = {
        n: m for n, m in (("text_encoder", c.text_encoder), ("text_encoder_2", c.text_encoder_2)) if m is not None
    }
    for m in (c.unet, c.vae, *encoders.values()):
        m.requires_grad_(False)
    trained = {"unet": c.unet, **(encoders if setup.train_text_encoder else {})}
    if cfg.method == "controlnet":  # the base stays frozen (config.py refuses --train-text-encoder)
        trained = {"controlnet": make_controlnet(c, cfg.seed).requires_grad_(True)}
    trained_encoders = [m for n, m in trained.items() if n in encoders]
    if cfg.method == "lora":
        torch.manual_seed(cfg.seed)  # LoRA's random init: the same run must start the same way
        add_adapters(c.unet, cfg.lora_rank, lora_targets(c))
        for m in trained_encoders:
            add_adapters(m, cfg.lora_rank, TEXT_TARGETS)
    elif cfg.method in ("full", "unclip"):
        for m in trained.values():
            m.requires_grad_(True)
    for m in family_of(c).conditioning(c).unused_modules() if trained_encoders else []:
        m.requires_grad_(False)
    for m in trained.values():
        m.train()
        # Trainable weights stay fp32 under mixed precision (autocast handles compute).
        for p in m.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        c.unet.enable_gradient_checkpointing()
        if "controlnet" in trained:
            trained["controlnet"].enable_gradient_checkpointing()
        for m in trained_encoders:
            m.gradient_checkpointing_enable()
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

    return torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, **adamw_kwargs(torch.cuda.is_available())
    )


class EMA:
    """Exponential moving average of trainable weights, with the usual warm-up
    decay = min(decay, (1 + n) / (10 + n)) so early averages are not dominated by init."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: p.detach().clone().float() for k, p in named_params.items()}

    @torch.no_grad()
    def update(self, named_params: dict[str, torch.nn.Parameter]) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in named_params.items():
            self.shadow[k].lerp_(p.detach().float(), 1 - d)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load(self, shadow: dict, updates: int) -> None:
        self.shadow = {k: v.clone().float() for k, v in shadow.items()}
        self.updates = updates


@dataclass
class TrainState:
    setup: Setup  # the components and where they came from
    modules: dict  # {"unet": module, "text_encoder": module}: the trained modules, unwrapped
    params: dict  # {"unet.<name>": parameter}: the trainable parameters
    optimizer: object
    lr_schedule: object
    ema: EMA | None
    step: int = 0
    # Untrained tensors a run sets from its data (an unCLIP normaliser's, a prior's statistics), saved
    # with each checkpoint so an export rebuilds the model the run trained: {"name": live tensor}.
    fixed: dict = field(default_factory=dict)

    @classmethod
    def create(cls, cfg: FinetuneConfig, setup: Setup) -> "TrainState":
        """Open the trainable part of `setup` per `cfg` (LoRA or full) and build its optimizer."""
        state = cls.of(cfg, setup, make_trainable(setup, cfg))
        normalizer = (getattr(setup.components, "unclip", None) or {}).get("image_normalizer")
        if normalizer is not None:
            state.fixed = {"image_normalizer.mean": normalizer.mean, "image_normalizer.std": normalizer.std}
        return state

    @classmethod
    def of(cls, cfg: FinetuneConfig, setup: Setup, modules: dict) -> "TrainState":
        """The state of training `modules` (their parameters that require grad) per `cfg`: optimizer,
        LR schedule, and an EMA for the methods that train whole networks (full, prior)."""
        params = named_trainable(modules)
        optimizer = make_optimizer(list(params.values()), cfg)
        ema = EMA(params, cfg.ema_decay) if cfg.method in ("full", "prior", "unclip") and cfg.ema_decay else None
        schedule = make_lr_schedule(optimizer, cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps)
        return cls(setup, modules, params, optimizer, schedule, ema)

    def advance(self) -> None:
        """After an optimizer step: the schedule and EMA follow, the step counts."""
        self.lr_schedule.step()
        if self.ema is not None:
            self.ema.update(self.params)
        self.step += 1

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "trainable": {k: p.detach() for k, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "fixed": {k: v.detach() for k, v in self.fixed.items()},
        }

    def load_weights(self, weights: dict, source) -> None:
        missing = set(self.params) - set(weights)
        if missing:
            raise UsageError(f"checkpoint {source} does not match this model/method (lacks {sorted(missing)[0]})")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(weights[k])

    def load_state_dict(self, state: dict, source="the checkpoint") -> None:
        self.load_weights(state["trainable"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        if self.ema is not None:
            self.ema.load(state["ema"]["shadow"], state["ema"]["updates"])
        with torch.no_grad():
            for k, v in state.get("fixed", {}).items():
                if k in self.fixed:
                    self.fixed[k].copy_(v)
        self.step = state["step"]

    @torch.no_grad()
    def use_ema(self) -> None:
        """Copy the EMA weights into the trained modules (for the final model or an export)."""
        if self.ema is not None:
            for key, tensor in self.ema.shadow.items():
                module, name = key.split(".", 1)
                self.modules[module].get_parameter(name).copy_(tensor)


# --- checkpoint files ---------------------------------------------------------------------


def write_trainable(d: Path, state: TrainState) -> None:
    """Checkpoint files of a TrainState: trainable weights only (a LoRA checkpoint stays small),
    optimizer, LR schedule, EMA (its update count goes in the manifest), a from-scratch run's tokenizer."""
    from safetensors.torch import save_file

    sd = state.state_dict()
    save_file({k: p.contiguous().cpu() for k, p in sd["trainable"].items()}, str(d / "trainable.safetensors"))
    torch.save(sd["optimizer"], d / "optimizer.pt")
    torch.save(sd["lr_schedule"], d / "lr_schedule.pt")
    if sd["ema"] is not None:
        save_file({k: v.contiguous() for k, v in sd["ema"]["shadow"].items()}, str(d / "ema.safetensors"))
    if sd["fixed"]:
        save_file({k: v.contiguous().cpu() for k, v in sd["fixed"].items()}, str(d / "fixed.safetensors"))
    if state.setup.from_scratch:
        state.setup.components.tokenizer.save_pretrained(str(d / "tokenizer"))
    as_umask_allows(d)


def read_trainable(d: Path) -> dict:
    """The TrainState.state_dict a checkpoint folder holds (inverse of write_trainable)."""
    manifest = ckpt.read_manifest(d)
    with ckpt.damaged_checkpoint(d):
        ema, fixed = d / "ema.safetensors", d / "fixed.safetensors"
        return {
            "fixed": ckpt.load_tensors(fixed) if fixed.is_file() else {},
            "step": manifest["step"],
            "trainable": ckpt.load_tensors(d / "trainable.safetensors"),
            "optimizer": ckpt.load_torch(d / "optimizer.pt"),
            "lr_schedule": ckpt.load_torch(d / "lr_schedule.pt"),
            "ema": {"shadow": ckpt.load_tensors(ema), "updates": int(manifest.get("ema_updates", 0))}
            if ema.is_file()
            else None,
        }
