"""AUTOMATIC1111 request bodies turned into our job parameters.

Every field a client sends is honoured, or sits at a value that leaves the image as A1111 would make
it, or is refused with a 400 naming it: nothing is dropped silently. Fields left out take the
model's own values where A1111's defaults are meant for 512 px SD models (size, steps, CFG scale)."""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict

from latentdiff.config.params import MAX_CLIP_SKIP, MAX_SEED, MAX_SIDE, whole
from latentdiff.errors import UsageError
from latentdiff.sampling.schedulers import SCHEDULERS, check_scheduler_name, split_name
from latentdiff.server.schema import MAX_IMAGES, MAX_STEPS
from latentdiff.server.schema import MAX_SIDE as SERVER_SIDE
from latentdiff.server.values import Flag, real
from latentdiff.server.values import whole as whole_field

# A1111 sampler name -> (our scheduler name, A1111 aliases), from the one scheduler table
SAMPLERS = {m.a1111: (k, list(m.aliases)) for k, m in SCHEDULERS.items()}
# A1111's hires upscalers we have: "Latent" is bilinear on the latents as ours; "None" and
# "Lanczos" both resize the decoded image with Lanczos in A1111.
HR_UPSCALERS = {"Latent": "latent", "Lanczos": "lanczos", "None": "lanczos"}
# The eta our ancestral/DDIM samplers run with; A1111 takes `eta` for these two.
SAMPLER_ETA = {"euler_a": 1.0, "ddim": 0.0}


class Txt2ImgRequest(BaseModel):
    """The fields latentdiff honours (None: the model's value); other A1111 fields are checked
    against `NEUTRAL` and `IGNORED` by `refuse_unhonoured`."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: whole_field(-1, MAX_SEED) = -1
    steps: whole_field(1, MAX_STEPS, optional=True) = None
    cfg_scale: real(0, 100, optional=True) = None
    width: whole_field(8, SERVER_SIDE, optional=True) = None
    height: whole_field(8, SERVER_SIDE, optional=True) = None
    batch_size: whole_field(1, MAX_IMAGES) = 1
    n_iter: whole_field(1, MAX_IMAGES) = 1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    eta: real(0, 1, optional=True) = None
    override_settings: dict | None = None
    enable_hr: Flag = False
    hr_scale: real(1, 8) = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: whole_field(0, MAX_STEPS) = 0
    hr_resize_x: whole_field(0, MAX_SIDE) = 0
    hr_resize_y: whole_field(0, MAX_SIDE) = 0
    denoising_strength: real(0, 1, optional=True) = None


class Img2ImgRequest(Txt2ImgRequest):
    """img2img and inpainting. `inpainting_fill` is ignored: the masked area always starts from the
    picture itself noised to `denoising_strength` (A1111's "original"; at 1.0 that is pure noise)."""

    init_images: list[str] = []
    denoising_strength: real(0, 1) = 0.75
    resize_mode: whole_field(0, 3) = 0  # a1111.RESIZE_MODES
    mask: str | None = None
    mask_blur: whole_field(0, 256) = 4
    inpainting_fill: whole_field(0, 3) = 0
    inpaint_full_res: Flag = True
    inpaint_full_res_padding: whole_field(0, SERVER_SIDE) = 0
    inpainting_mask_invert: whole_field(0, 1) = 0
    initial_noise_multiplier: real(0, 2, optional=True) = None  # only 1 is supported (a1111.py)
    include_init_images: Flag = False


def _one_of(*values) -> Callable:
    return lambda v, body: v in values


def _empty(v, body) -> bool:
    return not v


def _active_scripts(scripts) -> bool:
    """Whether an extension other than ControlNet (a1111_controlnet.py reads its units) is given work."""
    return any(
        k.lower() != "controlnet" and isinstance(v, dict) and v.get("args") not in (None, [], [False])
        for k, v in (scripts or {}).items()
    )


# Fields we do not honour -> (true where the value changes nothing, what the field is for).
NEUTRAL: dict[str, tuple[Callable, str]] = {
    "restore_faces": (_one_of(False, None), "face restoration"),
    "tiling": (_one_of(False, None), "tiling"),
    "styles": (_empty, "A1111 styles"),
    "subseed_strength": (_one_of(0, None), "variation seeds (subseed)"),
    "seed_resize_from_h": (lambda v, b: v is None or v <= 0, "seed resize"),
    "seed_resize_from_w": (lambda v, b: v is None or v <= 0, "seed resize"),
    "script_name": (_empty, "A1111 scripts"),
    "alwayson_scripts": (lambda v, b: not _active_scripts(v), "extensions other than ControlNet"),
    "s_churn": (_one_of(0, None), "sampler churn"),
    "s_tmin": (_one_of(0, None), "sampler churn"),
    "s_tmax": (_one_of(0, None), "sampler churn"),
    "s_noise": (_one_of(1, None), "sampler noise"),
    "s_min_uncond": (_one_of(0, None), "negative guidance minimum sigma"),
    "refiner_checkpoint": (lambda v, b: v in (None, "", "None"), "a refiner"),
    "firstpass_image": (_one_of(None), "a given first-pass image"),
    "infotext": (_empty, "parameters from infotext"),
    "latent_mask": (_one_of(None), "a separate latent mask"),
    "mask_round": (_one_of(True, None), "unrounded masks"),
    "mask_blur_x": (lambda v, b: v == getattr(b, "mask_blur", v), "separate x and y mask blur"),
    "mask_blur_y": (lambda v, b: v == getattr(b, "mask_blur", v), "separate x and y mask blur"),
}
# With enable_hr: the second pass uses the first pass's model, sampler and prompts.
NEUTRAL_HR: dict[str, tuple[Callable, str]] = {
    "hr_checkpoint_name": (lambda v, b: v in (None, "", "Use same checkpoint"), "another hires checkpoint"),
    "hr_sampler_name": (lambda v, b: v in (None, "", "Use same sampler", b.sampler_name), "another hires sampler"),
    "hr_scheduler": (lambda v, b: v in (None, "", "Use same scheduler", b.scheduler), "another hires schedule type"),
    "hr_prompt": (lambda v, b: v in (None, "", b.prompt), "another hires prompt"),
    "hr_negative_prompt": (lambda v, b: v in (None, "", b.negative_prompt), "another hires negative prompt"),
    "firstphase_width": (_one_of(0, None), "the old hires first-pass size"),
    "firstphase_height": (_one_of(0, None), "the old hires first-pass size"),
    "hr_additional_modules": (_empty, "hires add-on modules"),
}
# Fields that do not change the image (saving, echoing, task ids) or only matter with one refused above.
IGNORED = {
    "subseed",
    "do_not_save_samples",
    "do_not_save_grid",
    "send_images",
    "save_images",
    "comments",
    "override_settings_restore_afterwards",
    "force_task_id",
    "script_args",
    "refiner_switch_at",
    "disable_extra_networks",
    "image_cfg_scale",
}
OVERRIDES = {"sd_model_checkpoint", "CLIP_stop_at_last_layers"}
NEUTRAL_OVERRIDES = {"sd_vae": ("Automatic", "None", None)}


def refuse_unhonoured(body: Txt2ImgRequest) -> None:
    """A 400 for the first field sent that latentdiff would otherwise drop."""
    hr = set(NEUTRAL_HR) | {f for f in Txt2ImgRequest.model_fields if f.startswith("hr_")}
    for name, value in (body.model_extra or {}).items():
        if name in IGNORED or (name in hr and not body.enable_hr):
            continue
        ok, what = {**NEUTRAL, **NEUTRAL_HR}.get(name, (None, None))
        if ok is None:
            raise UsageError(f"unknown field {short(name)}: not an A1111 API field latentdiff knows; leave it out")
        if not _holds(ok, value, body):
            raise UsageError(f"{name}={short(value)}: {what} is not supported by latentdiff")
    for key, value in (body.override_settings or {}).items():
        neutral = NEUTRAL_OVERRIDES.get(key, ())
        if key not in OVERRIDES and not _holds(lambda v, b: v in neutral, value, body):  # noqa: B023 (called at once)
            raise UsageError(
                f"override_settings.{short(key)} is not supported by latentdiff; it honours "
                f"{', '.join(sorted(OVERRIDES))}"
            )
    model = (body.override_settings or {}).get("sd_model_checkpoint")
    if model is not None and not isinstance(model, str):
        raise UsageError(f"override_settings.sd_model_checkpoint must be a model name, got {short(model)}")


def _holds(ok: Callable, value, body) -> bool:
    """Whether the neutral-value rule `ok` holds; a value of another type than the field's is not neutral."""
    try:
        return bool(ok(value, body))
    except (TypeError, ValueError, AttributeError):
        return False


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def job_params(body: Txt2ImgRequest) -> dict:
    """Our pipeline keyword arguments for a txt2img request (img2img adds its own)."""
    refuse_unhonoured(body)
    if body.batch_size * body.n_iter > MAX_IMAGES:  # each is >= 1 (the schema)
        raise UsageError(f"batch_size * n_iter must be at most {MAX_IMAGES}, got {body.batch_size} * {body.n_iter}")
    scheduler = sampler_to_scheduler(body.sampler_name or body.sampler_index, body.scheduler)
    if body.eta is not None and scheduler in SAMPLER_ETA and body.eta != SAMPLER_ETA[scheduler]:
        want = f"{SAMPLER_ETA[scheduler]:g}"
        raise UsageError(
            f"eta={body.eta:g}: latentdiff's {body.sampler_name or body.sampler_index} runs with eta "
            f"{want}; send eta {want} or leave it out"
        )
    overrides = body.override_settings or {}
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
    )
    if overrides.get("CLIP_stop_at_last_layers") is not None:
        label = "override_settings.{}".format
        params["clip_skip"] = whole(
            label, "CLIP_stop_at_last_layers", overrides["CLIP_stop_at_last_layers"], 1, MAX_CLIP_SKIP
        )
    if body.enable_hr:
        params.update(hires_params(body))
    return params


def hires_params(body: Txt2ImgRequest) -> dict:
    """enable_hr and its fields as our hires fix: the first pass at width x height, upscaled by
    hr_scale (or to hr_resize_x/y, which must keep the aspect ratio), then img2img."""
    upscaler = body.hr_upscaler or "Latent"
    ours = HR_UPSCALERS.get(upscaler, upscaler if upscaler in HR_UPSCALERS.values() else None)
    if ours is None:
        raise UsageError(f"hr_upscaler {upscaler!r} is not available; latentdiff has: {', '.join(HR_UPSCALERS)}")
    scale = body.hr_scale
    if body.hr_resize_x or body.hr_resize_y:
        scale = _resize_scale(body)
    out = {"hires": scale, "hires_upscaler": ours, "hires_steps": body.hr_second_pass_steps or None}
    if body.denoising_strength is not None:
        out["hires_strength"] = body.denoising_strength
    return out


def _resize_scale(body: Txt2ImgRequest) -> float:
    if body.width is None or body.height is None:
        raise UsageError("hr_resize_x/hr_resize_y need width and height (the first pass's size); or use hr_scale")
    x, y = body.hr_resize_x, body.hr_resize_y
    if x and y and x * body.height != y * body.width:
        raise UsageError(
            f"hr_resize {x}x{y} does not keep the aspect ratio of {body.width}x{body.height}: "
            "latentdiff's hires fix scales both sides by one factor; give one side, or hr_scale"
        )
    return x / body.width if x else y / body.height


def sampler_to_scheduler(sampler: str | None, schedule: str | None) -> str | None:
    """Our choice for A1111's sampler_name and scheduler (the one table reads both)."""
    if not sampler:
        return None
    schedule = None if (schedule or "").lower() in ("", "automatic") else schedule
    if split_name(sampler) is None:
        raise UsageError(f"unknown sampler {sampler!r}; GET /sdapi/v1/samplers lists: {', '.join(SAMPLERS)}")
    return check_scheduler_name(sampler, schedule)
