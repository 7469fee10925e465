"""AUTOMATIC1111 request bodies turned into our job parameters.

Every field a client sends is honoured, or sits at a value that leaves the image as A1111 would make
it, or is refused with a 400 naming it (the table: a1111_fields.py): nothing is dropped silently.
Fields left out take the model's own values where A1111's defaults are meant for 512 px SD models
(size, steps, CFG scale)."""

from __future__ import annotations

import secrets
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

import latentdiff.config.params as rules
from latentdiff.errors import UsageError
from latentdiff.sampling.schedulers import SCHEDULERS, check_scheduler_name, resolved, split_name
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS
from latentdiff.sampling.unipc_settings import check_setting
from latentdiff.server.a1111_fields import FIELDS, HONOURED, SETTINGS, is_one_of
from latentdiff.server.a1111_hires import REFINER_PASSES, hires_params
from latentdiff.server.a1111_pixels import rng_of
from latentdiff.server.a1111_samplers import OPTION_BOUNDS, sampler_options
from latentdiff.server.schema import MAX_IMAGES, MAX_STEPS
from latentdiff.server.schema import MAX_SIDE as SERVER_SIDE
from latentdiff.server.values import Flag, real
from latentdiff.server.values import whole as whole_field

# A1111 sampler name -> (our scheduler name, A1111 aliases), from the one scheduler table
SAMPLERS = {m.a1111: (k, list(m.aliases)) for k, m in SCHEDULERS.items()}


class Txt2ImgRequest(BaseModel):
    """The fields latentdiff reads (None: the model's value, or A1111's setting); the others of
    a1111_fields.FIELDS arrive as extras and are checked by `refuse_unhonoured`."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: whole_field(-1, rules.MAX_SEED) = -1
    steps: whole_field(1, MAX_STEPS, optional=True) = None
    cfg_scale: real(0, 100, optional=True) = None
    distilled_cfg_scale: real(0, 100, optional=True) = None  # Forge's (a1111_flow.py)
    width: whole_field(8, SERVER_SIDE, optional=True) = None
    height: whole_field(8, SERVER_SIDE, optional=True) = None
    batch_size: whole_field(1, MAX_IMAGES) = 1
    n_iter: whole_field(1, MAX_IMAGES) = 1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    eta: real(0, OPTION_BOUNDS["eta"], optional=True) = None
    s_churn: real(0, OPTION_BOUNDS["s_churn"], optional=True) = None
    s_tmin: real(0, OPTION_BOUNDS["s_tmin"], optional=True) = None
    s_tmax: real(0, OPTION_BOUNDS["s_tmax"], optional=True) = None
    s_noise: real(0, OPTION_BOUNDS["s_noise"], optional=True) = None
    override_settings: dict | None = None
    override_settings_restore_afterwards: Flag = True
    send_images: Flag = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: real(0, 1, optional=True) = None
    infotext: str | None = None
    disable_extra_networks: Flag = False
    enable_hr: Flag = False
    hr_scale: real(1, 8) = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: whole_field(0, MAX_STEPS) = 0
    hr_resize_x: whole_field(0, rules.MAX_SIDE) = 0
    hr_resize_y: whole_field(0, rules.MAX_SIDE) = 0
    denoising_strength: real(0, 1, optional=True) = None
    subseed: whole_field(-1, rules.MAX_SEED, optional=True) = -1
    subseed_strength: real(0, 1, optional=True) = 0
    seed_resize_from_h: whole_field(-1, rules.MAX_SIDE, optional=True) = -1
    seed_resize_from_w: whole_field(-1, rules.MAX_SIDE, optional=True) = -1

    route: ClassVar[str] = "txt2img"


class Img2ImgRequest(Txt2ImgRequest):
    """img2img and inpainting. The masked area always starts from the picture itself noised to
    `denoising_strength` (A1111's inpainting_fill 1, "original"; at 1.0 that is pure noise)."""

    init_images: list[str] = []
    denoising_strength: real(0, 1) = 0.75
    resize_mode: whole_field(0, 3) = 0  # a1111.RESIZE_MODES
    mask: str | None = None
    mask_blur: whole_field(0, 256, optional=True) = None
    mask_blur_x: whole_field(0, 256) = 4
    mask_blur_y: whole_field(0, 256) = 4
    inpainting_fill: whole_field(0, 3) = 0
    inpaint_full_res: Flag = True
    inpaint_full_res_padding: whole_field(0, SERVER_SIDE) = 0
    inpainting_mask_invert: whole_field(0, 1) = 0
    include_init_images: Flag = False

    route: ClassVar[str] = "img2img"


def refuse_unhonoured(body: Txt2ImgRequest) -> None:
    """A 400 for the first field sent that latentdiff would otherwise drop, or that is not one of
    this route's."""
    extra = body.model_extra or {}
    for name in sorted(body.model_fields_set | set(extra)):
        f = FIELDS.get(name)
        if f is None:
            raise UsageError(f"unknown field {short(name)}: not an A1111 API field latentdiff knows; leave it out")
        if f.only not in (None, body.route):
            raise UsageError(f"{name} is a field of /sdapi/v1/{f.only}, not of /sdapi/v1/{body.route}")
        if f.hires and not body.enable_hr:  # A1111 reads them only with enable_hr
            continue
        value = extra[name] if name in extra else getattr(body, name)
        if f.neutral is not None and not _holds(f.neutral, value, body):
            raise UsageError(f"{name}={short(value)}: {f.says} is not supported by latentdiff")
    if "alwayson_scripts" in extra and _active_scripts(extra["alwayson_scripts"]):
        raise UsageError(
            f"alwayson_scripts={short(extra['alwayson_scripts'])}: extensions other than ControlNet are not supported by latentdiff"
        )


def _active_scripts(scripts) -> bool:
    """Whether an extension other than ControlNet (a1111_controlnet.py reads its units) is given work."""
    return not isinstance(scripts, dict) or any(
        k.lower() != "controlnet" and isinstance(v, dict) and v.get("args") not in (None, [], [False])
        for k, v in scripts.items()
    )


def check_settings(values, where: str) -> dict:
    """A1111 settings (override_settings, or a POST /options body) checked against SETTINGS: the
    honoured ones' values, the others only at the values that change nothing; 400 naming the key."""
    if not isinstance(values, dict):
        raise UsageError(f"{where} must be an object of settings, got {short(values)}")
    out = {}
    for key, value in values.items():
        s = SETTINGS.get(key)
        if s is None:
            raise UsageError(
                f"{where}.{short(key)} is not a setting latentdiff has; it knows: {', '.join(SETTINGS)} "
                "(GET /sdapi/v1/options shows them)"
            )
        if s.how != HONOURED:
            if not _holds(lambda v, b: is_one_of(v, s.neutral), value, None):  # noqa: B023 (called at once)
                shown = ", ".join(repr(v) for v in s.neutral if v is not None)
                raise UsageError(f"{where}.{key}={short(value)}: {s.says} is not supported by latentdiff; only {shown}")
            continue
        out[key] = _setting_value(where, key, value)
    return out


def _setting_value(where: str, key: str, value):
    label = f"{where}.{{}}".format
    if key == "sd_model_checkpoint":
        if not isinstance(value, str):
            raise UsageError(f"{where}.sd_model_checkpoint must be a model name, got {short(value)}")
        return value
    if key == "CLIP_stop_at_last_layers":
        return rules.whole(label, key, value, 1, rules.MAX_CLIP_SKIP)
    if key == "randn_source":
        rng_of({key: value})  # 400 for a source A1111 lacks
        return value.upper()
    if key == "sd_vae":
        if not isinstance(value, str) and value is not None:
            raise UsageError(f"{where}.sd_vae must be a VAE's name, got {short(value)}")
        return value
    if key == "eta_noise_seed_delta":  # A1111's ENSD: a seed offset
        return rules.whole(label, key, value, 0, rules.MAX_SEED)
    if key in UNIPC_SETTINGS:
        return check_setting(key, value)
    if key == "hires_fix_refiner_pass":
        if not isinstance(value, str) or value not in REFINER_PASSES:
            raise UsageError(f"{where}.{key}={short(value)}: A1111's are {', '.join(REFINER_PASSES)}")
        return value
    option = {"eta_ddim": "eta", "eta_ancestral": "eta"}.get(key, key)
    return rules.real(label, key, value, 0, OPTION_BOUNDS[option])


def settings(stored: dict, body: Txt2ImgRequest) -> dict:
    """A1111's settings for this request: its defaults, what POST /options stored, override_settings."""
    defaults = {k: s.default for k, s in SETTINGS.items()}
    return {**defaults, **stored, **check_settings(body.override_settings or {}, "override_settings")}


def _holds(ok, value, body) -> bool:
    """Whether the neutral-value rule `ok` holds; a value of another type than the field's is not neutral."""
    try:
        return bool(ok(value, body))
    except (TypeError, ValueError, AttributeError):
        return False


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def job_params(body: Txt2ImgRequest, stored: dict | None = None, own_sampler: str | None = None, find=None) -> dict:
    """Our pipeline keyword arguments for a txt2img request (img2img adds its own). `stored`: the
    settings POST /options set; `own_sampler`: the model's own sampler key, where known (what runs
    when the body names none); `find(name)`: the upscaler model file an hr_upscaler names, or None."""
    refuse_unhonoured(body)
    values = settings(stored or {}, body)
    if body.batch_size * body.n_iter > MAX_IMAGES:  # each is >= 1 (the schema)
        raise UsageError(f"batch_size * n_iter must be at most {MAX_IMAGES}, got {body.batch_size} * {body.n_iter}")
    scheduler = sampler_to_scheduler(body.sampler_name or body.sampler_index, body.scheduler)
    params = dict(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        steps=body.steps,
        guidance=body.cfg_scale,
        width=body.width,
        height=body.height,
        seed=None if body.seed < 0 else body.seed,
        num_images=body.batch_size * body.n_iter,
        scheduler=scheduler,
        **sampler_options(body, values, resolved(scheduler)[0] if scheduler else own_sampler),
        **seed_params(body, values),
    )
    if body.distilled_cfg_scale is not None:  # read with the model (a1111_flow.on_family)
        params["distilled_cfg_scale"] = body.distilled_cfg_scale
    if not (body.sampler_name or body.sampler_index) and (body.scheduler or "").lower() not in ("", "automatic"):
        params["schedule"] = body.scheduler  # the model's own sampler with this schedule type
    if "CLIP_stop_at_last_layers" in {**(stored or {}), **(body.override_settings or {})}:
        params["clip_skip"] = values["CLIP_stop_at_last_layers"]
    if body.refiner_checkpoint not in (None, "", "None"):
        if body.refiner_switch_at is None or not 0 < body.refiner_switch_at < 1:
            raise UsageError(
                f"refiner_switch_at must be between 0 and 1 (exclusive) with refiner_checkpoint, "
                f"got {short(body.refiner_switch_at)}"
            )
        params.update(refiner=title_name(body.refiner_checkpoint), refiner_start=body.refiner_switch_at)
    if body.enable_hr:
        params.update(hires_params(body, find, values["hires_fix_refiner_pass"]))
    return params


def title_name(title) -> str:
    """A1111 titles look like 'name.safetensors [hash]'; ours are folder names."""
    return str(title).split(" [")[0].strip()


def seed_params(body: Txt2ImgRequest, values: dict) -> dict:
    """A1111's seed fields and its ENSD setting as our noise keywords: a subseed strength above 0
    (subseed -1: a random one, as A1111), seed_resize_from_w/h both above 0, ENSD (the setting) other
    than 0. Any of them selects A1111's own path with the randn_source setting's noise (default: the
    GPU's numbers, as A1111)."""
    out = {}
    if body.subseed_strength:
        sub = body.subseed
        out.update(
            variation_strength=body.subseed_strength,
            variation_seed=secrets.randbelow(2**32) if sub is None or sub < 0 else sub,
        )
    w, h = body.seed_resize_from_w, body.seed_resize_from_h
    if w is not None and h is not None and w > 0 and h > 0:  # A1111 resizes only with both
        out["seed_resize_from"] = (w, h)
    if values.get("eta_noise_seed_delta"):
        out["ensd"] = values["eta_noise_seed_delta"]
    return {**out, "rng": rng_of(values)} if out else {}


def sampler_to_scheduler(sampler: str | None, schedule: str | None) -> str | None:
    """Our choice for A1111's sampler_name and scheduler (the one table reads both)."""
    if not sampler:
        return None
    schedule = None if (schedule or "").lower() in ("", "automatic") else schedule
    if split_name(sampler) is None:
        raise UsageError(f"unknown sampler {sampler!r}; GET /sdapi/v1/samplers lists: {', '.join(SAMPLERS)}")
    return check_scheduler_name(sampler, schedule)
