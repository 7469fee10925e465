"""What a call adds to the model call beyond its prompt: control units (workflows/control.py),
IP-Adapter image prompts (workflows/image_prompt.py) and the sampler's schedule type and options
(sampling/schedulers.py), taken from the call's keyword options and checked before any work."""

from __future__ import annotations

import latentdiff.config.params as params
from latentdiff.config.noise_params import NAMES as NOISE_NAMES
from latentdiff.config.noise_params import noise_request
from latentdiff.errors import UsageError
from latentdiff.sampling.noise import COMFY_DEVICES, MAX_NOISE_BATCH, NOISE_MODES
from latentdiff.sampling.sampler_table import COMFY_OWN, SAMPLERS
from latentdiff.sampling.schedulers import OPTIONS, check_options, check_scheduler_name, method_of, split_name
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS
from latentdiff.workflows.comfy_start import ComfyRun, size_of
from latentdiff.workflows.control import control_units
from latentdiff.workflows.image_prompt import image_prompt_slots
from latentdiff.workflows.unclip import NAMES as UNCLIP_NAMES
from latentdiff.workflows.unclip import unclip_request

NAMES = {
    "controls": None,
    "control_mode": "balanced",
    "image_prompts": None,
    "ip_adapter": None,
    "image_encoder": None,
    "schedule": None,
    **dict.fromkeys(OPTIONS),
    **dict.fromkeys(NOISE_NAMES),
    "noise": "per_image",
    "noise_batch": None,
    "noise_index": 0,
    "comfy_graph": None,
    **dict.fromkeys(UNCLIP_NAMES),
    "cfg_normalization": 0.0,
    "cfg_truncation": 1.0,
}


def api_text(name) -> str:
    return params.text(params.api_label, "scheduler", name)


def take(options: dict) -> dict:
    """The addition options popped out of a call's `options` (the rest are image options)."""
    return {k: options.pop(k, default) for k, default in NAMES.items()}


def a1111_noise(taken: dict) -> bool:
    """Whether the call asks for A1111's noise, and so for A1111's own sampling path."""
    return any(taken[k] is not None for k in NOISE_NAMES)


def own_path(taken: dict, scheduler) -> bool:
    """Whether the call runs A1111's or ComfyUI's own sampling path (which check their samplers and
    options themselves): A1111's noise, or ComfyUI's with one of ComfyUI's k-diffusion samplers."""
    if a1111_noise(taken) or taken["comfy_graph"] is not None:
        return True
    pair = split_name(scheduler) if taken["noise"] in COMFY_DEVICES and isinstance(scheduler, str) else None
    return pair is not None and any(n in COMFY_OWN for n in SAMPLERS[pair[0]].comfy)


def additions(pipe, taken: dict, request, scheduler=None) -> dict:
    """The request fields for `taken`: checked control units and image-prompt slots, the sampler
    with its schedule type and options, and A1111's noise (then `scheduler` is the call's sampler
    name, checked here as A1111's path takes it)."""
    a1111, own = a1111_noise(taken), own_path(taken, scheduler)
    return {
        "controls": control_units(pipe, taken["controls"], taken["control_mode"], seed=request.seed),
        "image_prompts": image_prompt_slots(pipe, taken["image_prompts"], taken["ip_adapter"], taken["image_encoder"]),
        **sampler_fields(pipe, scheduler if own else request.scheduler, taken, own),
        "a1111": noise_request(params.api_label, taken, len(request.prompts) * request.num_images),
        **noise_fields(taken),
        **comfy_fields(pipe, taken["comfy_graph"]),
        "unclip": unclip_request(pipe, taken, request, a1111),
        **guide_fields(pipe, taken),
    }


def guide_fields(pipe, taken: dict) -> dict:
    """The CFG normalisation and truncation (Z-Image's), checked, and refused in one line on a family without them."""
    fields = {name: params.cfg_option(params.api_label, name, taken[name]) for name in params.CFG_OPTIONS}
    pipe.family.guide_options(*fields.values())
    return fields


def noise_fields(taken: dict) -> dict:
    """The noise mode (sampling/noise.py) and, for ComfyUI's, the batch its rows come from."""
    api = params.api_label
    batch = taken["noise_batch"]
    return {
        "noise": params.choice(api, "noise", taken["noise"], NOISE_MODES),
        "noise_batch": None if batch is None else params.whole(api, "noise_batch", batch, 1, MAX_NOISE_BATCH),
        "noise_index": params.whole(api, "noise_index", taken["noise_index"], 0, MAX_NOISE_BATCH - 1),
    }


def comfy_fields(pipe, graph: dict | None) -> dict:
    """A ComfyUI graph's run, checked; one starting from a picture runs at its size (cut to the VAE's factor)."""
    if graph is None:
        return {}
    run = ComfyRun.checked(graph)
    size = {} if run.image is None else dict(zip(("width", "height"), size_of(run.image, pipe.scale_factor)))
    return {"comfy_run": run, **size}


def sampler_fields(pipe, name: str | None, taken: dict, a1111: bool = False) -> dict:
    """`scheduler` (choice `name`, None: the model's own, with schedule type `taken["schedule"]`),
    checked by the model's family (Flux refuses UNet samplers), and its checked `sampler_options`
    (eta, s_noise, ...). `a1111`: for A1111's path, which checks its samplers and options itself."""
    config = pipe.components.scheduler_config
    if a1111:
        name = None if name is None else check_scheduler_name(api_text(name), taken["schedule"], a1111=True)
        options = {k: taken[k] for k in (*OPTIONS, *UNIPC_SETTINGS) if taken[k] is not None}
        return {"scheduler": name, "sampler_options": tuple(options.items())}
    if name is not None and taken["schedule"] is None and pipe.family.own_sampler(name):
        name = None  # what the model's own scheduler is called in an A1111 line (Forge's Flux: Euler, Simple)
    if taken["schedule"] is not None:
        base = name or method_of(config)
        if base is None:
            raise UsageError(
                f"schedule={taken['schedule']!r} needs a sampler: the model's {config.get('_class_name')} is none of ours; give scheduler="
            )
        name = check_scheduler_name(base, taken["schedule"])
        pipe.family.check_scheduler(name)
    recommended = pipe.defaults()  # the model's own options go with its own recommended sampler
    own = name is not None and name == recommended.get("scheduler")
    given = {k: recommended.get(k) if taken[k] is None and own else taken[k] for k in OPTIONS}
    options = check_options(name, config, given)
    return {"scheduler": name, "sampler_options": tuple(options.items())}


def text_options(pipe, clip_skip, prompt_syntax, true_cfg=1.0) -> dict:
    """The request's clip skip (the model's default where None), prompt syntax and true CFG, checked."""
    clip_skip = pipe.components.defaults.get("clip_skip", 1) if clip_skip is None else clip_skip
    return {
        "clip_skip": pipe.conditioning.check_clip_skip(clip_skip),
        "prompt_syntax": params.prompt_syntax(params.api_label, prompt_syntax),
        "true_cfg": params.true_cfg(params.api_label, true_cfg),
    }
