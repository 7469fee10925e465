"""A1111 requests on the transformer families (Flux.1, SD 3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image), once
the model is known: Forge's `distilled_cfg_scale` on a guidance-distilled model, and A1111's sampler names
on a model that samples with its own flow-matching Euler.

Forge runs Flux.1 dev with two scales: `cfg_scale`, the loop's CFG against the negative prompt (1: none),
and `distilled_cfg_scale`, the guidance the model embeds; its infotext writes "CFG scale: 1, Distilled CFG
Scale: 3.5". A body with `distilled_cfg_scale` is read so on a model that embeds guidance (latentdiff's
`true_cfg` and `guidance`); a body without it reads `cfg_scale` as `generate --guidance` does (on Flux dev:
the embedded guidance). On other models Forge ignores the field, and so does latentdiff.

The flow-matching families sample with their scheduler's Euler on its shifted sigmas, what Forge and
ComfyUI call Euler with the Simple schedule: A1111's `Euler` (schedule Automatic or Simple) is that
sampler; other samplers and schedules are a 400 naming the field."""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.sampling.schedulers import SCHEDULERS, SCHEDULES, resolved

FLOW_SAMPLER, FLOW_SCHEDULES = "euler", (None, "simple")  # A1111's Euler, Automatic or Simple


def on_family(pipe, params: dict) -> dict:
    """`params` (an A1111 job's) as the loaded model `pipe` reads them. Forge's distilled_cfg_scale stays
    where the model embeds no guidance (of no effect: the worker drops it, the job shows it)."""
    p = dict(params)
    if p.get("distilled_cfg_scale") is not None and embeds_guidance(pipe):
        p["true_cfg"] = 1.0 if p.get("guidance") is None else p["guidance"]
        p["guidance"] = p.pop("distilled_cfg_scale")
    if own_flow_sampler(pipe):
        _flow_sampler(pipe, p)
    return p


def embeds_guidance(pipe) -> bool:
    """Whether the model embeds a distilled guidance (Flux.1 dev, Fill, Kontext), as its family reads one."""
    return pipe.family.guidance(pipe.components, 1.0)[1] is not None


def own_flow_sampler(pipe) -> bool:
    """Whether the model samples with its own flow-matching scheduler (the sampler table does not apply):
    its family reads A1111's Euler with the Simple schedule as that sampler (families/flow.py)."""
    return pipe.family.own_sampler(f"{FLOW_SAMPLER}_simple")


def _flow_sampler(pipe, p: dict) -> None:
    """A1111's Euler (Automatic or Simple) as the model's own sampler; any other a 400 naming the field."""
    name, schedule = p.get("scheduler"), (p.get("schedule") or "").strip().lower()
    label = pipe.family.label
    if schedule and schedule not in ("simple", "automatic"):
        raise UsageError(
            f"scheduler {p['schedule']!r}: {label} samples on its own shifted flow-matching sigmas (A1111's "
            "Simple); send scheduler Simple or Automatic, or leave it out"
        )
    p.pop("schedule", None)
    if name is None:
        return
    sampler, sched = resolved(name)
    if sampler != FLOW_SAMPLER:
        raise UsageError(
            f"sampler_name {SCHEDULERS[sampler].a1111!r}: {label} samples with its own flow-matching Euler; send "
            "sampler_name Euler or leave it out"
        )
    if sched not in FLOW_SCHEDULES:
        raise UsageError(
            f"scheduler {SCHEDULES[sched].a1111!r}: {label} samples on its own shifted flow-matching sigmas (A1111's "
            "Simple); send scheduler Simple or Automatic, or leave it out"
        )
    p["scheduler"] = None
