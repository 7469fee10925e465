"""What the flow-matching transformer families (Flux.1, SD 3/3.5) share: they sample with their
own FlowMatchEulerDiscreteScheduler (the UNet families' sampler table does not apply), count an
image-to-image run's steps as their diffusers img2img pipelines do, and shift the schedule by the
image's token count where the scheduler config asks for a dynamic shift."""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.families.base import Family


def calculate_shift(seq_len: int, config, max_shift: float = 1.15) -> float:
    """The schedule's shift mu for `seq_len` image tokens: linear from base_shift at
    base_image_seq_len to max_shift at max_image_seq_len (diffusers' calculate_shift; `max_shift`:
    the pipeline's default where the config gives none, 1.15 in FluxPipeline, 1.16 in SD3's)."""
    base, most = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    lo, hi = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
    m = (hi - lo) / (most - base)
    return seq_len * m + (lo - m * base)


class FlowMatching(Family):
    """A family sampled by its model's own flow-matching Euler scheduler."""

    def check_scheduler(self, name: str | None) -> None:
        if name is not None:
            raise UsageError(
                f"{self.label} samples with its own flow-matching Euler scheduler; scheduler {name!r} is for "
                "the UNet families (leave the scheduler unset)"
            )

    def strength_steps(self, steps: int, strength: float) -> int:
        """FluxImg2ImgPipeline's and StableDiffusion3Img2ImgPipeline's count: the steps after
        int(steps - steps * strength), in floats."""
        return steps - int(max(steps - min(steps * strength, steps), 0))
