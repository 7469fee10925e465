"""The one scheduler table: our names, A1111's, the diffusers class and the settings each method needs.

Torch-free (the CLI's --help and the server's schema list the names without loading torch); the
loop that runs them is `sampling.denoise`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from latentdiff.errors import UsageError


@dataclass(frozen=True)
class Method:
    cls: str  # the diffusers class
    a1111: str  # AUTOMATIC1111's sampler name
    sets: dict = field(default_factory=dict)  # what makes the method: always applied over the model's config
    # What the method needs and diffusers' Stable Diffusion configs set, where the model's config says
    # nothing: the class defaults (clip_sample=True, set_alpha_to_one=True) are for pixel-space DDPMs and
    # ruin a latent model's image (clipping latents to [-1, 1] gives a noise square).
    needs: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # further names A1111 API clients send
    # Fewest steps that gave clean images on the shipped model (tests/sampling/test_schedulers.py); the
    # default steps are raised to it when this method is asked for by name.
    min_steps: int = 1


_LATENT = {"clip_sample": False, "set_alpha_to_one": False}

SCHEDULERS: dict[str, Method] = {
    "ddim": Method("DDIMScheduler", "DDIM", needs=_LATENT),
    "ddpm": Method("DDPMScheduler", "DDPM", needs={"clip_sample": False}),
    # PLMS's four-step multistep formula is unstable at the shipped model's 12 steps.
    "pndm": Method(
        "PNDMScheduler", "PLMS", sets={"skip_prk_steps": True}, needs={"set_alpha_to_one": False}, min_steps=30
    ),
    "euler": Method("EulerDiscreteScheduler", "Euler", aliases=("k_euler",)),
    "euler_a": Method("EulerAncestralDiscreteScheduler", "Euler a", aliases=("k_euler_a", "k_euler_ancestral")),
    "heun": Method("HeunDiscreteScheduler", "Heun", aliases=("k_heun",)),
    "lms": Method("LMSDiscreteScheduler", "LMS", aliases=("k_lms",)),
    "dpm++2m": Method(
        "DPMSolverMultistepScheduler",
        "DPM++ 2M",
        sets={"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
        aliases=("k_dpmpp_2m",),
    ),
    "dpm++2m_karras": Method(
        "DPMSolverMultistepScheduler",
        "DPM++ 2M Karras",
        sets={"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        aliases=("k_dpmpp_2m_ka",),
    ),
    "unipc": Method("UniPCMultistepScheduler", "UniPC"),
}
NAMES = ", ".join(SCHEDULERS)
MIN_STEPS = ", ".join(f"{k} at least {m.min_steps}" for k, m in SCHEDULERS.items() if m.min_steps > 1)
_BY_A1111 = {m.a1111.lower(): k for k, m in SCHEDULERS.items()}


def scheduler_key(name: str) -> str | None:
    """Our scheduler name for one of ours or an A1111 sampler name (any case), else None."""
    key = name.strip().lower()
    return key if key in SCHEDULERS else _BY_A1111.get(key)


def check_scheduler_name(name: str) -> str:
    """Our name for a scheduler given by our name or by its A1111 sampler name ("Euler a")."""
    key = scheduler_key(name)
    if key is None:
        raise UsageError(
            f"unknown scheduler {name!r}; choose one of: {NAMES} "
            "(or its A1111 name, e.g. 'DPM++ 2M Karras'; see docs/generate.md#schedulers)"
        )
    return key


def method_of(config: dict) -> str | None:
    """Our name for the model's own scheduler config: the first row of its class that none of its
    settings contradicts."""
    cls = config.get("_class_name", "PNDMScheduler")
    same_class = [k for k, m in SCHEDULERS.items() if m.cls == cls]
    for k in same_class:
        if all(config.get(o, v) == v for o, v in SCHEDULERS[k].sets.items()):
            return k
    return same_class[0] if same_class else None


def scheduler_settings(config: dict, name: str | None = None) -> tuple[str, dict]:
    """(diffusers class name, config) of method `name` on the model's scheduler config; None: the
    model's own method, its config kept except for the settings its method needs that it lacks."""
    if name is None:
        own = method_of(config)
        m = SCHEDULERS.get(own) if own else None
        fill = {**m.sets, **m.needs} if m else {}
        return config.get("_class_name", "PNDMScheduler"), {**fill, **config}
    m = SCHEDULERS[check_scheduler_name(name)]
    return m.cls, {**m.needs, **config, **m.sets}


def make_scheduler(config: dict, name: str | None = None):
    """A fresh scheduler: the model's own config, optionally switched to another method."""
    import diffusers

    cls_name, settings = scheduler_settings(config, name)
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise UsageError(f"the model's scheduler class {cls_name!r} is not available in diffusers")
    return cls.from_config(settings)


def default_steps(name: str | None, recommended: int) -> int:
    """The model's recommended steps, raised to the method's minimum when a method is named (the
    model's own scheduler is what its recommendation was measured with)."""
    return recommended if name is None else max(recommended, SCHEDULERS[name].min_steps)
