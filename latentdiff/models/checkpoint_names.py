"""Tensor names as a module names them, where transformers saves a model under other names than it
builds it with (transformers 5 maps them back when it loads; our loader reads the files itself)."""

from __future__ import annotations

import re


def checkpoint_names(module, sd: dict) -> dict:
    """`sd` with its keys as `module` names them, where transformers saves a model under other names
    than it builds it with (Qwen2.5-VL's `visual.` and `model.layers.`, as its renaming rules map
    them when it loads): each key the module lacks renamed by the first rule that matches it."""
    rules = _renamings(module)
    if not rules:
        return sd
    own = set(module.state_dict())
    out = {}
    for key, value in sd.items():
        if key not in own:
            key = next((new for pattern, target in rules if (new := re.sub(pattern, target, key)) != key), key)
        out[key] = value
    return out


def _renamings(module) -> list[tuple[str, str]]:
    """transformers' renaming rules (regex, replacement) for `module`'s class; none for other modules."""
    if not type(module).__module__.startswith("transformers."):
        return []
    from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping

    rules = get_model_conversion_mapping(module) or []
    return [(p, t) for r in rules if type(r) is WeightRenaming for p, t in zip(r.source_patterns, r.target_patterns)]
