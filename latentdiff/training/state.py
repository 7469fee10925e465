"""`TrainState`: what a run trains and what must survive a resume (trainable modules, optimizer,
LR schedule, EMA, step), with `state_dict` / `load_state_dict`. The loop steps it, the checkpoint
writer saves its state_dict (outputs.write_trainable), resume and export load it back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UsageError


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
    setup: object  # trainable.Setup: the components and where they came from
    modules: dict  # {"unet": module, "text_encoder": module}: the trained modules, unwrapped
    params: dict  # {"unet.<name>": parameter}: the trainable parameters
    optimizer: object
    lr_schedule: object
    ema: EMA | None
    step: int = 0

    @classmethod
    def create(cls, cfg, setup) -> "TrainState":
        """Open the trainable part of `setup` per `cfg` (LoRA or full) and build its optimizer."""
        from .lr_schedule import make_lr_schedule
        from .trainable import make_optimizer, make_trainable, named_trainable

        modules = make_trainable(setup, cfg)
        params = named_trainable(modules)
        optimizer = make_optimizer(list(params.values()), cfg)
        ema = EMA(params, cfg.ema_decay) if cfg.method == "full" and cfg.ema_decay else None
        schedule = make_lr_schedule(optimizer, cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps)
        return cls(setup, modules, params, optimizer, schedule, ema)

    def advance(self) -> None:
        """After an optimizer step: the schedule and EMA follow, the step counts."""
        self.lr_schedule.step()
        if self.ema is not None:
            self.ema.update(self.params)
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "trainable": {k: p.detach() for k, p in self.params.items()},
                "optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

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
        self.step = state["step"]

    @torch.no_grad()
    def use_ema(self) -> None:
        """Copy the EMA weights into the trained modules (for the final model or an export)."""
        if self.ema is not None:
            for key, tensor in self.ema.shadow.items():
                module, name = key.split(".", 1)
                self.modules[module].get_parameter(name).copy_(tensor)
