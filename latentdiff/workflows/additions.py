"""What a call adds to the model call beyond its prompt: control units (workflows/control.py),
IP-Adapter image prompts (workflows/image_prompt.py) and the sampler's schedule type and options
(sampling/schedulers.py), taken from the call's keyword options and checked before any work."""

from __future__ import annotations

import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.sampling.noise import MAX_NOISE_BATCH, NOISE_MODES
from latentdiff.sampling.schedulers import OPTIONS, check_options, check_scheduler_name, method_of
from latentdiff.workflows.control import control_units
from latentdiff.workflows.image_prompt import image_prompt_slots

NAMES = {
    "controls": None,
    "control_mode": "balanced",
    "image_prompts": None,
    "ip_adapter": None,
    "image_encoder": None,
    "schedule": None,
    **dict.fromkeys(OPTIONS),
    "noise": "per_image",
    "noise_batch": None,
    "noise_index": 0,
}


def take(options: dict) -> dict:
    """The addition options popped out of a call's `options` (the rest are image options)."""
    return {k: options.pop(k, default) for k, default in NAMES.items()}


def additions(pipe, taken: dict, request) -> dict:
    """The request fields for `taken`: checked control units and image-prompt slots, and the sampler
    with its schedule type and options."""
    return {
        "controls": control_units(pipe, taken["controls"], taken["control_mode"], seed=request.seed),
        "image_prompts": image_prompt_slots(pipe, taken["image_prompts"], taken["ip_adapter"], taken["image_encoder"]),
        **sampler_fields(pipe, request.scheduler, taken),
        **noise_fields(taken),
    }


def noise_fields(taken: dict) -> dict:
    """The noise mode (sampling/noise.py) and, for ComfyUI's, the batch its rows come from."""
    api = params.api_label
    batch = taken["noise_batch"]
    return {
        "noise": params.choice(api, "noise", taken["noise"], NOISE_MODES),
        "noise_batch": None if batch is None else params.whole(api, "noise_batch", batch, 1, MAX_NOISE_BATCH),
        "noise_index": params.whole(api, "noise_index", taken["noise_index"], 0, MAX_NOISE_BATCH - 1),
    }


def sampler_fields(pipe, name: str | None, taken: dict) -> dict:
    """`scheduler` (choice `name`, None: the model's own, with schedule type `taken["schedule"]`),
    checked by the model's family (Flux refuses UNet samplers), and its checked `sampler_options`
    (eta, s_noise, ...)."""
    config = pipe.components.scheduler_config
    if taken["schedule"] is not None:
        base = name or method_of(config)
        if base is None:
            raise UsageError(
                f"schedule={taken['schedule']!r} needs a sampler: the model's {config.get('_class_name')} is none of ours; give scheduler="
            )
        name = check_scheduler_name(base, taken["schedule"])
        pipe.family.check_scheduler(name)
    options = check_options(name, config, {k: taken[k] for k in OPTIONS})
    return {"scheduler": name, "sampler_options": tuple(options.items())}
