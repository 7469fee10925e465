"""The transformer families' original single-file key layouts (formats/transformer_tables.py) <->
diffusers' names, each table read both ways.

They exist because diffusers' Flux and Chroma converters fix the width at the released 3072 (a
smaller model cannot be converted with them) and diffusers has no converter back.
"""

from __future__ import annotations

import torch

from latentdiff.errors import ModelError
from latentdiff.formats.transformer_tables import LAYOUTS, MARKS, OTHERS, SUPPORTED


def layout_of(names, where="the file") -> str | None:
    """The transformer family whose original layout these tensor names are in (None: neither); one
    of a family we do not load is refused naming it."""
    names = list(names)
    for other, mark in OTHERS.items():
        if any(k.startswith(mark) or f".{mark}" in k for k in names):
            raise ModelError(f"{where} is a {other} transformer; supported transformer files: {SUPPORTED}")
    for family, mark in MARKS.items():
        if any(mark in k for k in names):
            return family
    return None


def block_count(names, prefix: str) -> int:
    """How many blocks `prefix`.0, .1, ... the names hold; numbers with gaps are refused (a damaged
    file's block 99999999 must not make us walk a hundred million blocks)."""
    found = {k[len(prefix) + 1 :].split(".", 1)[0] for k in names if k.startswith(prefix + ".")}
    numbers = {int(i) for i in found if i.isdigit()}
    if numbers and (max(numbers) + 1 != len(numbers) or len(numbers) != len(found)):
        raise ModelError(f"the {prefix} of this file are not numbered 0, 1, 2, ...: a damaged or foreign file")
    return len(numbers)


def _rules(family: str, names) -> list[tuple[str, tuple[str, ...], str]]:
    """Every rule of `family` with block indices filled in, for a model of these (original) names."""
    layout = LAYOUTS[family]
    out = [(o, d if isinstance(d, tuple) else (d,), how) for o, d, how in layout.top]
    for orig, ours, rules, middle, last in layout.blocks:
        n = block_count(names, orig)
        for i in range(n):
            for o, d, how in rules + (last if i == n - 1 else middle):
                d = d if isinstance(d, tuple) else (d,)
                out.append((f"{orig}.{i}.{o}", tuple(f"{ours}.{i}.{x}" for x in d), how))
    return out


def _leaves(orig: str, targets: tuple[str, ...]):
    if orig.endswith((".weight", ".bias", ".scale")) or orig == "pos_embed":
        return [(orig, targets)]
    return [(f"{orig}.{p}", tuple(f"{t}.{p}" for t in targets)) for p in ("weight", "bias")]


def _swap(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_diffusers(sd: dict, family: str, where) -> dict:
    """The original-layout transformer tensors `sd` (prefix already removed) in diffusers' names; a
    tensor no rule takes is refused (a layout this does not know) unless the layout's other names
    are diffusers' own."""
    layout = LAYOUTS[family]
    sd, out = {k: v for k, v in sd.items() if k not in layout.dropped}, {}
    for orig, targets, how in _rules(family, list(sd)):
        for o, ts in _leaves(orig, targets):
            if o not in sd:
                continue
            t = sd.pop(o)
            if how == "swap":
                out[ts[0]] = _swap(t)
            elif how == "qkv":
                out.update(zip(ts, t.chunk(3, dim=0)))
            elif how == "qkvm":
                if "x_embedder.weight" not in out:  # the width (top-level rules run first)
                    raise ModelError(f"{where} lacks img_in.weight, which every Flux transformer has")
                width = out["x_embedder.weight"].shape[0]
                out.update(zip(ts, torch.split(t, [width] * 3 + [t.shape[0] - 3 * width], dim=0)))
            else:
                out[ts[0]] = t
    if layout.passthrough:
        return {**sd, **out}
    if sd:
        raise ModelError(f"{where} has tensors the {family} layout does not know: {', '.join(sorted(sd)[:3])}...")
    return out


def to_original(sd: dict, family: str) -> dict:
    """diffusers' transformer tensors `sd` in the original layout (the inverse of `to_diffusers`)."""
    sd, out = dict(sd), {}
    names = _original_names(sd, family)
    for orig, targets, how in _rules(family, names):
        for o, ts in _leaves(orig, targets):
            if not all(t in sd for t in ts):
                continue
            parts = [sd.pop(t) for t in ts]
            out[o] = _swap(parts[0]) if how == "swap" else torch.cat(parts, dim=0)
    if LAYOUTS[family].passthrough:
        return {**sd, **out}
    if sd:
        raise ModelError(f"cannot write {', '.join(sorted(sd)[:3])} in the original {family} layout")
    return out


def _original_names(sd: dict, family: str) -> list[str]:
    """Stand-in original names with the block counts of diffusers' `sd` (for `_rules`)."""
    blocks = LAYOUTS[family].blocks
    return [f"{orig}.{i}." for orig, ours, *_ in blocks for i in range(block_count(list(sd), ours))]
