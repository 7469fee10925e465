"""Image k depends only on seed + k, also for schedulers that draw their noise from one seed in their
config rather than from the generators passed to `step` (diffusers' DPMSolverSDEScheduler: a
Brownian tree, `noise_sampler_seed`, over the whole batch): such a scheduler is run as one copy per
image, copy k seeded with image k's seed (its generator's), so a batch equals its seeds run alone
and each image equals diffusers' pipeline run with `noise_sampler_seed` = its seed."""

from __future__ import annotations

import copy

import torch


class PerImage:
    """One copy of `scheduler` per image; `step` steps row k with copy k, the rest reads copy 0 (the
    copies' timesteps, sigmas and step counters stay equal: every copy steps every time)."""

    def __init__(self, scheduler, seeds: list[int]):
        self.parts = []
        for seed in seeds:
            part = copy.deepcopy(scheduler)
            part.register_to_config(noise_sampler_seed=seed)
            self.parts.append(part)

    def __getattr__(self, name):
        return getattr(self.parts[0], name)

    def set_begin_index(self, index: int) -> None:
        for part in self.parts:
            part.set_begin_index(index)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, **kwargs):
        rows = [
            part.step(model_output[k : k + 1], timestep, sample[k : k + 1], **kwargs).prev_sample
            for k, part in enumerate(self.parts)
        ]
        return type("Step", (), {"prev_sample": torch.cat(rows)})


def per_image(scheduler, generators: list[torch.Generator]):
    """`scheduler` itself, or (when its config holds the noise seed) a PerImage of it seeded with each
    generator's seed (`initial_seed`: what `manual_seed` set)."""
    if "noise_sampler_seed" not in scheduler.config or isinstance(scheduler, PerImage):
        return scheduler
    return PerImage(scheduler, [g.initial_seed() for g in generators])
