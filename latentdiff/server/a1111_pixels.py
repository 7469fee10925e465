"""Which sampling path an A1111 API request runs on, so that A1111 clients get A1111's pixels.

A1111's own path (workflows/a1111_path.py: its denoiser wrapper, sigma schedules, seed rules and
noise sources) runs /sdapi/v1/txt2img whenever it can run the request: the server option
`serve --a1111-pixels on` (the default) asks for it with A1111's default noise source, its GPU's
numbers (`rng="nv"`, the same on any device); A1111's `randn_source` setting (GPU, CPU, NV) names
the source and asks for the path even with `--a1111-pixels off`. What the path does not run yet
(ControlNet units; a sampler or model family it lacks) stays on
diffusers' path, and the answer's `info` says so (`sampling_path`, and `sampling_path_note` why).

A1111's seed fields (subseed_strength, seed_resize_from_w/h, the eta_noise_seed_delta setting) only
mean something on A1111's path: a request naming them that the path cannot run is a 400 naming the
field, before it is queued (choice: refusing says what would differ; running it on diffusers'
path with those fields dropped would give other pixels without a word)."""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.sampling.sampler_table import A1111_PATH, SAMPLERS
from latentdiff.sampling.schedulers import OPTIONS, split_name
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS

RANDN = {"GPU": "nv", "NV": "nv", "CPU": "cpu"}  # A1111's randn_source -> our rng (GPU: its numbers on any device)
# Our noise keyword -> the A1111 field or setting that set it (a1111_params.seed_params)
SEED_FIELDS = {
    "variation_strength": "subseed_strength",
    "seed_resize_from": "seed_resize_from_w",
    "ensd": "eta_noise_seed_delta",
}
# ... and A1111's UniPC settings (a1111_samplers.unipc_settings), which also run on A1111's path only
PATH_FIELDS = {**SEED_FIELDS, **{k: k for k in UNIPC_SETTINGS}}


def _kind(field: str) -> str:
    return "A1111's seed fields" if field in SEED_FIELDS.values() else "A1111's UniPC settings"


def rng_of(values: dict) -> str:
    source = values.get("randn_source", "GPU")
    if not isinstance(source, str) or source.upper() not in RANDN:
        raise UsageError(f"randn_source={str(source)[:40]!r}: A1111's are {', '.join(RANDN)}")
    return RANDN[source.upper()]


def blocker(body, route: str, controls: bool) -> str | None:
    """What of the request A1111's own path does not run yet (the field that asks for it), or None."""
    if controls:
        return "alwayson_scripts (ControlNet units)"
    return None


def plan(params: dict, wanted: bool, rng: str, blocked: str | None) -> tuple[str | None, str | None]:
    """(the noise source of A1111's path, or None: diffusers' path; a note saying why not) for a
    request whose job `params` were made. `wanted`: the server or the randn_source setting asks for
    A1111's pixels; `blocked`: what the path does not run. With A1111's seed fields the request runs
    there (their `params` name the source) or is refused."""
    named = [field for ours, field in PATH_FIELDS.items() if ours in params]
    sampler = split_name(params.get("scheduler") or "")
    if named:
        field = named[0]
        if blocked is not None:
            raise UsageError(
                f"{field}: {_kind(field)} run on A1111's own sampling path, which does not run "
                f"{blocked} yet; leave {field} out (or at its neutral value) for this request"
            )
        if sampler is not None and sampler[0] not in A1111_PATH:
            raise UsageError(
                f"{field}: {_kind(field)} run on A1111's own sampling path, whose samplers are "
                f"{', '.join(SAMPLERS[k].a1111 for k in A1111_PATH)}; not {SAMPLERS[sampler[0]].a1111}"
            )
        params["rng"] = rng
        return None, None
    if not wanted:
        return None, "A1111's pixels are off on this server (serve --a1111-pixels off, no randn_source set)"
    if blocked is not None:
        return None, f"A1111's own path does not run {blocked} yet"
    if sampler is not None and sampler[0] not in A1111_PATH:
        return None, f"A1111's own path does not run {SAMPLERS[sampler[0]].a1111}"
    return rng, None


def check_loaded(pipe, params: dict) -> None:
    """A request with A1111's seed fields on a loaded model: a 400 naming the field before it is
    queued where A1111's path cannot run it (the model's family or own sampler)."""
    named = [field for ours, field in PATH_FIELDS.items() if ours in params]
    reason = path_refusal(pipe, params) if named and pipe is not None else None
    if reason is not None:
        raise UsageError(f"{named[0]}: {_kind(named[0])} run on A1111's own sampling path, which does not run {reason}")


def on_a1111_path(pipe, params: dict, rng: str) -> tuple[dict, str | None]:
    """({"rng": rng}, None) where A1111's path runs this job on this model, else ({}, why not)."""
    reason = path_refusal(pipe, params)
    return ({"rng": rng}, None) if reason is None else ({}, f"A1111's own path does not run {reason}")


def masked_off_path(params: dict) -> list[str]:
    """A1111's masked content of a job that runs on diffusers' path, which starts the masked area from the
    picture (A1111's original): fill runs so, with a warning (returned); latent noise and nothing are refused."""
    content = params.pop("masked_content", None)
    if content in ("latent_noise", "latent_nothing"):
        fill = {"latent_noise": 2, "latent_nothing": 3}[content]
        raise UsageError(
            f"inpainting_fill={fill}: starting the masked area from latent noise or nothing runs on A1111's own "
            "path only; 1 (original) starts from the picture"
        )
    if content == "fill":
        return [
            "inpainting_fill 0 (fill) ran as 1 (original): the masked area starts from the picture itself, not "
            "from its blurred colours as in A1111 (which A1111's own path does)"
        ]
    return []


def path_refusal(pipe, params: dict) -> str | None:
    """What of the job A1111's own path does not run on this loaded model (its family, sampler, options), or None."""
    # Imported by the worker with a loaded model (torch).
    from latentdiff.workflows.a1111_path import FAMILIES, check_options, sampler_schedule

    if pipe.family.name not in FAMILIES:
        return f"{pipe.family.label} models"
    if params.get("schedule") is not None:
        return "a schedule type without a sampler_name"
    try:
        sampler, _ = sampler_schedule(pipe, params.get("scheduler"))
        if sampler not in A1111_PATH:
            return f"the model's own sampler ({pipe.components.scheduler_config.get('_class_name')})"
        check_options(sampler, {k: params[k] for k in (*OPTIONS, *UNIPC_SETTINGS) if params.get(k) is not None})
    except UsageError as e:
        return str(e)
    return None
