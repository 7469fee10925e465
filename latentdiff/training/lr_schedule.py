"""The one learning-rate schedule of `finetune` and `train-vae`: diffusers' `get_scheduler` set.

Every schedule starts with `warmup_steps` of linear warm-up from 0 (diffusers' formula, step/warmup);
plain `constant` with a warm-up means diffusers' `constant_with_warmup`. The schedule is a pure
function of the step, rebuilt on resume, so a raised --max-steps stretches a decay from there on.
"""

from __future__ import annotations

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def make_lr_schedule(optimizer, name: str, warmup_steps: int, max_steps: int):
    """A torch LambdaLR stepping once per optimizer step."""
    from diffusers.optimization import get_scheduler

    if name == "constant" and warmup_steps:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)


def lr_at(step: int, name: str, lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate the schedule uses at 0-based optimizer step `step` (for tests and plots)."""
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = make_lr_schedule(opt, name, warmup_steps, max_steps)
    for _ in range(step):
        opt.step()
        schedule.step()
    return schedule.get_last_lr()[0]
