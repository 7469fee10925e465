"""The one sampler x schedule-type table: our names, A1111 1.10's, ComfyUI's, the diffusers class and
the settings each needs (docs/generate.md#samplers shows it as a table).

A choice is a sampler and a schedule type, as in A1111 >= 1.9 ("Sampler: DPM++ 2M, Schedule type:
Karras"). It travels as one name: the sampler's (schedule "Automatic") or `<sampler>_<schedule>`
("dpm++2m_karras"), which every parser here reads back. "Automatic" is A1111 1.10's default schedule
of the sampler (`Sampler.automatic`; read in its modules/sd_samplers_kdiffusion.py); where that default
is A1111's plain sigma list, the model's own timestep spacing is kept.

Torch-free (the CLI's --help and the server's schema list the names without loading torch); the
loop that runs them is `sampling.denoise`.
"""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.sampling.sampler_table import (  # noqa: F401 (the table's names, re-exported)
    _SAMPLER_NAMES,
    _SCHEDULE_NAMES,
    _SIGMA_FLAGS,
    A1111_PATH,
    COMFY_OWN,
    MIN_STEPS,
    NAMES,
    OPTIONS,
    SAMPLERS,
    SCHEDULE_NAMES,
    SCHEDULERS,
    SCHEDULES,
    Method,
    Sampler,
    Schedule,
)


def _choices(table: dict) -> str:
    """The runnable rows of SAMPLERS or SCHEDULES, as "key (A1111 name)"."""
    runs = [k for k, row in table.items() if (row.cls if table is SAMPLERS else row.sets is not None or row.sigma_list)]
    return ", ".join(f"{k} ({table[k].a1111})" for k in runs)


def split_name(name: str) -> tuple[str, str | None] | None:
    """(sampler, schedule or None) of a sampler name, ours or A1111's or ComfyUI's (any case), alone or
    with a schedule after a space or '_' ("DPM++ 2M Karras", "dpm++2m_karras", "k_dpmpp_2m_ka"); None
    if it is none of them."""
    key = name.strip().lower()
    if key in _SAMPLER_NAMES:
        return _SAMPLER_NAMES[key], None
    for schedule in sorted(_SCHEDULE_NAMES, key=len, reverse=True):  # "sgm uniform" before "uniform"
        for sep in (" ", "_"):
            rest = key.removesuffix(sep + schedule)
            if rest != key and rest in _SAMPLER_NAMES:
                return _SAMPLER_NAMES[rest], _SCHEDULE_NAMES[schedule]
    return None


def schedule_key(name: str | None) -> str | None:
    """Our key of a schedule type given by any of its names; None for None or an unknown name."""
    return None if name is None else _SCHEDULE_NAMES.get(name.strip().lower())


def spec(sampler: str, schedule: str | None) -> str:
    """The one name a (sampler, schedule) choice travels as."""
    return sampler if schedule in (None, "automatic") else f"{sampler}_{schedule}"


def _own_path_only(sampler: str) -> None:
    """One line for a sampler with no exact diffusers class: the paths it runs on, if any."""
    paths = [p for p, on in (("A1111's own (an A1111 noise option, e.g. --rng nv)", sampler in A1111_PATH),
                             ("ComfyUI's own (--noise comfy)", any(c in COMFY_OWN for c in SAMPLERS[sampler].comfy))) if on]  # fmt: skip
    where = f"runs only on {' or '.join(paths)} path" if paths else "does not run in latentdiff yet"
    raise UsageError(
        f"sampler {SAMPLERS[sampler].a1111!r} has no exact diffusers scheduler and {where}; or choose one of: "
        f"{_choices(SAMPLERS)}"
    )


def parse(name: str, schedule: str | None = None, a1111: bool = False) -> tuple[str, str]:
    """(sampler, schedule) keys of `name` (see split_name) and `schedule` (any of its names; None:
    the one in `name`, else automatic), each checked to exist and to run here; UsageError otherwise.
    `a1111`: on A1111's own path (sampling/a1111.py), which checks what runs there itself."""
    pair = split_name(name)
    if pair is None:
        raise UsageError(
            f"unknown scheduler {name!r}; choose one of: {_choices(SAMPLERS)} "
            "(or its A1111 or ComfyUI name, e.g. 'DPM++ 2M Karras'; see docs/generate.md#samplers)"
        )
    if SAMPLERS[pair[0]].cls is None and not a1111:
        _own_path_only(pair[0])
    sampler, named = pair
    if schedule is not None and not isinstance(schedule, str):
        raise UsageError(f"the schedule type must be a name (a string), got {str(schedule)[:40]!r}")
    chosen = named if schedule is None else schedule_key(schedule)
    if schedule is not None and (chosen is None or (named and named != chosen)):
        why = f"{name!r} names schedule {named!r}" if chosen and named else f"unknown schedule type {schedule!r}"
        raise UsageError(f"{why}; choose one of: {_choices(SCHEDULES)} (see docs/generate.md#samplers)")
    chosen = chosen or "automatic"
    takes = list(SCHEDULES) if a1111 else runnable_schedules(sampler)
    if chosen not in takes:
        runs = SCHEDULES[chosen].sets is not None or SCHEDULES[chosen].sigma_list
        where = f"with {SAMPLERS[sampler].a1111} " if runs else ""
        raise UsageError(
            f"schedule type {SCHEDULES[chosen].a1111!r} does not run {where}in latentdiff yet; "
            f"{SAMPLERS[sampler].a1111} takes: {', '.join(SCHEDULES[s].a1111 for s in takes)}"
        )
    return sampler, chosen


def runnable_schedules(sampler: str) -> list[str]:
    """The schedule types that run with `sampler` here, Automatic first."""
    kind = SAMPLERS[sampler].schedules
    flags = _SIGMA_FLAGS if kind in ("sigmas", "list") else ("uniform", "sgm_uniform") if kind == "spacing" else ()
    lists = [k for k, s in SCHEDULES.items() if s.sigma_list] if kind == "list" else []
    return ["automatic", *flags, *lists]


def check_scheduler_name(name: str, schedule: str | None = None, a1111: bool = False) -> str:
    """The one name (see `spec`) of a sampler given by any of its names, optionally with a schedule."""
    return spec(*parse(name, schedule, a1111))


def scheduler_key(name: str) -> str | None:
    """The one name of a runnable sampler name (any of its names, any case), else None."""
    try:
        return check_scheduler_name(name)
    except UsageError:
        return None


def resolved(name: str) -> tuple[str, str | None]:
    """(sampler, schedule that runs): Automatic resolved to A1111's default of the sampler (None:
    its plain sigmas, which here keep the model's own spacing)."""
    sampler, schedule = parse(name, a1111=True)  # names only: what runs was checked on the way in
    return sampler, SAMPLERS[sampler].automatic if schedule == "automatic" else schedule


def schedule_settings(sampler: str, schedule: str | None) -> dict:
    """The diffusers settings of running `schedule` (None: the model's own spacing) with `sampler`:
    every sigma flag the class takes is stated, so a model config's own flag does not stay on."""
    flags = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
    flags = flags if SAMPLERS[sampler].schedules in ("sigmas", "list") else {}
    if schedule is None or SCHEDULES[schedule].sigma_list:
        return flags
    return {**flags, **SCHEDULES[schedule].sets}


def method_of(config: dict) -> str | None:
    """Our sampler name for the model's own scheduler config: the first row of its class that none of
    its settings contradicts."""
    cls = config.get("_class_name", "PNDMScheduler")
    same_class = [k for k, m in SCHEDULERS.items() if m.cls == cls]
    for k in same_class:
        if all(config.get(o, v) == v for o, v in SCHEDULERS[k].sets.items() if o in ("algorithm_type", "solver_type")):
            return k
    return same_class[0] if same_class else None


def schedule_of(config: dict) -> str | None:
    """The schedule type the model's own scheduler config runs (None: plain sigmas, its spacing)."""
    for key in ("karras", "exponential", "beta"):
        if all(config.get(o) == v for o, v in SCHEDULES[key].sets.items()):
            return key
    return "sgm_uniform" if config.get("timestep_spacing") == "trailing" else None


# Schedulers outside our table as A1111-style UIs write them: Forge writes the flow-matching families' sampler
# (Euler on the model's shifted sigmas) as "Euler" with the "Simple" schedule.
FOREIGN_A1111 = {"FlowMatchEulerDiscreteScheduler": ("Euler", "Simple")}


def a1111_names(name: str | None, config: dict) -> tuple[str, str | None]:
    """(Sampler, Schedule type) as A1111 1.10 writes them for our choice `name` (None: the model's own
    scheduler config): the schedule that runs, stated even where it is A1111's Automatic (so A1111
    before 1.9 and civitai read it too); "Uniform" where the model's own spacing runs but A1111's
    Automatic would not be plain; left out where both are plain."""
    if name is None:
        sampler = method_of(config)
        if sampler is None:
            cls = config.get("_class_name", "PNDMScheduler")
            return FOREIGN_A1111.get(cls, (cls, None))
        schedule = schedule_of(config)
    else:
        sampler, schedule = resolved(name)
    m = SAMPLERS[sampler]
    if schedule is None and m.automatic is None:
        return m.a1111, None
    return m.a1111, SCHEDULES[schedule or "uniform"].a1111


def scheduler_settings(config: dict, name: str | None = None) -> tuple[str, dict]:
    """(diffusers class name, config) of choice `name` on the model's scheduler config; None: the
    model's own method, its config kept except for the settings its method needs that it lacks."""
    if name is None:
        own = method_of(config)
        m = SCHEDULERS.get(own) if own else None
        fill = {**m.sets, **m.needs} if m else {}
        return config.get("_class_name", "PNDMScheduler"), {**fill, **config}
    sampler, schedule = resolved(name)
    m = SAMPLERS[sampler]
    return m.cls, {**m.needs, **config, **m.sets, **schedule_settings(sampler, schedule)}


def check_options(name: str | None, config: dict, options: dict) -> dict:
    """`options` (eta, s_noise, s_churn, s_tmin, s_tmax; None: left out) that choice `name` takes;
    UsageError naming the samplers that take one it does not."""
    given = {k: v for k, v in options.items() if v is not None}
    sampler = method_of(config) if name is None else resolved(name)[0]
    takes = SAMPLERS[sampler].options if sampler else ()
    for k, v in given.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise UsageError(f"{k} must be a number >= 0, got {str(v)[:40]!r}")
        if k not in takes:
            who = ", ".join(m.a1111 for m in SCHEDULERS.values() if k in m.options)
            raise UsageError(f"{k} applies to the samplers {who}; not to {sampler or config.get('_class_name')}")
    return given


def make_scheduler(config: dict, name: str | None = None, options: tuple = ()):
    """A fresh scheduler: the model's own config, optionally switched to another sampler/schedule;
    `options` ((name, value) pairs checked by check_options) go to each of its steps."""
    import diffusers

    cls_name, settings = scheduler_settings(config, name)
    try:
        cls = getattr(diffusers, cls_name, None)
    except ImportError as e:  # DPMSolverSDEScheduler without torchsde
        raise UsageError(
            f"{cls_name} needs a package that is not installed: {str(e).strip().splitlines()[-1]}"
        ) from None
    if cls is None:
        raise UsageError(f"the model's scheduler class {cls_name!r} is not available in diffusers")
    scheduler = cls.from_config(settings)
    scheduler.step_options = dict(options)
    schedule = resolved(name)[1] if name is not None else None
    if schedule is not None and SCHEDULES[schedule].sigma_list:
        from latentdiff.sampling.sigmas import with_sigma_list  # numpy: kept out of --help's imports

        with_sigma_list(scheduler, schedule)
    return scheduler


def default_steps(name: str | None, recommended: int) -> int:
    """The model's recommended steps, raised to the method's minimum when a method is named (the
    model's own scheduler is what its recommendation was measured with)."""
    return recommended if name is None else max(recommended, SAMPLERS[resolved(name)[0]].min_steps)
