"""EMA weights: training state that must survive a resume (the data order is in data/order.py)."""

from __future__ import annotations

import torch


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
