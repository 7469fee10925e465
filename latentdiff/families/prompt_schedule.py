"""Prompts read with A1111's editing and alternation (`prompts/editing.py`) become a context per step.

Each prompt (and negative prompt) becomes a schedule of texts; every distinct text of the batch is
encoded once, in one call of the family's conditioning (so all share one chunk count, as the
prompts of one batch always do), and the rows of each step are picked from that encoding into a
`StepContexts`. A batch whose prompts have no schedule (one text each) takes the family's
conditioning exactly as before, with the texts as A1111 reads them (`[a:b:0]` is `b`).
"""

from __future__ import annotations

import torch

from latentdiff.prompts.composable import split_and
from latentdiff.prompts.editing import schedule, starts
from latentdiff.sampling.model_call import Composed, StepContexts


def text_schedules(texts: list[str], steps: int, hires_steps: int | None = None) -> list[list[tuple[int, str]]]:
    """Each text's `(first_step, text)` entries (steps from 0 in the run)."""
    return [starts(schedule(t, steps, hires_steps)) for t in texts]


def scheduled_conditioning(conditioning, prompts: list[str], negatives, *args, **kw):
    """(cond, uncond) contexts for A1111 prompts: `_scheduled`'s, and where a prompt has `AND` (or a
    trailing `:weight`) its sub-prompts' rows in a `Composed` context with their weights. Arguments
    as `_scheduled`'s."""
    subs = [split_and(p) for p in prompts] if args[2] == "a1111" else []
    if all(len(s) == 1 and s[0][1] == 1.0 for s in subs):
        return _scheduled(conditioning, prompts, negatives, *args, **kw)
    rows, mix = [], []
    for s in subs:
        mix.append(tuple((len(rows) + j, w) for j, (_, w) in enumerate(s)))
        rows += [t for t, _ in s]
    cond, uncond = _scheduled(conditioning, rows, negatives, *args, **kw)
    return Composed(cond, tuple(mix)), uncond


def _scheduled(
    conditioning,
    prompts: list[str],
    negatives: list[str] | None,
    height: int,
    width: int,
    syntax: str,
    clip_skip: int,
    steps: int,
    hires_steps: int | None = None,
    offset: int = 0,
):
    """(cond, uncond) as `conditioning` gives them, or `StepContexts` where a prompt is edited
    during sampling. `steps`: the first pass's steps; `hires_steps`: the hires pass's (the
    schedule made for it, as A1111 does); `offset`: the run starts at that step of the schedule
    (a refiner taking over)."""
    if syntax in ("plain", "comfy"):  # ComfyUI has no prompt editing
        return conditioning(prompts, negatives, height, width, syntax, clip_skip)
    plans = text_schedules(prompts, steps, hires_steps)
    neg_plans = None if negatives is None else text_schedules(negatives, steps, hires_steps)
    plans, neg_plans = _from_step(plans, offset), None if neg_plans is None else _from_step(neg_plans, offset)
    if all(len(p) == 1 for p in plans + (neg_plans or [])):
        first = [p[0][1] for p in plans]
        return conditioning(
            first, None if neg_plans is None else [p[0][1] for p in neg_plans], height, width, syntax, clip_skip
        )
    texts = _distinct(plans)
    neg_texts = None if neg_plans is None else _distinct(neg_plans)
    cond, uncond = conditioning(texts, neg_texts, height, width, syntax, clip_skip)
    bounds = sorted({s for p in plans + (neg_plans or []) for s, _ in p})
    return _per_step(cond, plans, texts, bounds), None if uncond is None else _per_step(
        uncond, neg_plans, neg_texts, bounds
    )


def _from_step(plans: list, offset: int) -> list:
    """The schedules as seen by a run that starts at step `offset` of them."""
    if not offset:
        return plans
    out = []
    for plan in plans:
        kept = [
            (max(0, s - offset), t) for k, (s, t) in enumerate(plan) if k + 1 == len(plan) or plan[k + 1][0] > offset
        ]
        out.append(kept)
    return out


def _distinct(plans: list) -> list[str]:
    return list(dict.fromkeys(t for plan in plans for _, t in plan))


def _text_at(plan: list, step: int) -> str:
    return [t for s, t in plan if s <= step][-1]


def _per_step(emb, plans: list, texts: list[str], bounds: list[int]) -> StepContexts:
    index = {t: k for k, t in enumerate(texts)}
    contexts = tuple(emb[torch.tensor([index[_text_at(p, b)] for p in plans])] for b in bounds)
    return StepContexts(contexts, tuple(bounds))
