"""What a call adds to the model call beyond its prompt: control units (workflows/control.py) and
IP-Adapter image prompts (workflows/image_prompt.py), taken from the call's keyword options and
checked before any work."""

from __future__ import annotations

from latentdiff.workflows.control import control_units
from latentdiff.workflows.image_prompt import image_prompt_slots

NAMES = {"controls": None, "control_mode": "balanced", "image_prompts": None, "ip_adapter": None, "image_encoder": None}


def take(options: dict) -> dict:
    """The addition options popped out of a call's `options` (the rest are image options)."""
    return {k: options.pop(k, default) for k, default in NAMES.items()}


def additions(pipe, taken: dict, seed: int) -> dict:
    """The request fields for `taken`: checked control units and image-prompt slots."""
    return {
        "controls": control_units(pipe, taken["controls"], taken["control_mode"], seed=seed),
        "image_prompts": image_prompt_slots(pipe, taken["image_prompts"], taken["ip_adapter"], taken["image_encoder"]),
    }
