"""A1111 parameters text on the API: a body's `infotext` filling the fields it leaves out (as A1111's
API does), POST /sdapi/v1/png-info, and the `info` object's extra_generation_params."""

from __future__ import annotations

from pydantic import ValidationError

from latentdiff.errors import UsageError
from latentdiff.images.infotext import parse_infotext
from latentdiff.sampling.unipc_settings import LABELS as UNIPC_LABELS
from latentdiff.server.a1111_fields import FIELDS
from latentdiff.server.a1111_params import Txt2ImgRequest, short
from latentdiff.server.inputs import open_picture, picture_bytes

MAX_INFOTEXT = 50_000  # two prompts at their limit and a parameters line
# A1111's parameters-text labels -> the body field each fills (as its txt2img/img2img paste fields do)
LABELS = {
    "Prompt": "prompt",
    "Negative prompt": "negative_prompt",
    "Steps": "steps",
    "Sampler": "sampler_name",
    "Schedule type": "scheduler",
    "CFG scale": "cfg_scale",
    "Distilled CFG Scale": "distilled_cfg_scale",  # Forge's Flux line
    "Seed": "seed",
    "Size-1": "width",
    "Size-2": "height",
    "Denoising strength": "denoising_strength",
    "Variation seed": "subseed",
    "Variation seed strength": "subseed_strength",
    "Seed resize from-1": "seed_resize_from_w",
    "Seed resize from-2": "seed_resize_from_h",
    "Face restoration": "restore_faces",
    "Tiling": "tiling",
    "Hires upscale": "hr_scale",
    "Hires steps": "hr_second_pass_steps",
    "Hires upscaler": "hr_upscaler",
    "Hires resize-1": "hr_resize_x",
    "Hires resize-2": "hr_resize_y",
    "Hires sampler": "hr_sampler_name",
    "Hires schedule type": "hr_scheduler",
    "Hires checkpoint": "hr_checkpoint_name",
    "Hires prompt": "hr_prompt",
    "Hires negative prompt": "hr_negative_prompt",
    "Mask blur": "mask_blur",
}
# ... and the labels that are A1111 settings (its infotext_to_setting_name_mapping), into override_settings
SETTING_LABELS = {
    "Clip skip": "CLIP_stop_at_last_layers",
    "ENSD": "eta_noise_seed_delta",
    "Eta": "eta_ancestral",
    "Eta DDIM": "eta_ddim",
    "Sigma churn": "s_churn",
    "Sigma tmin": "s_tmin",
    "Sigma tmax": "s_tmax",
    "Sigma noise": "s_noise",
    "VAE": "sd_vae",
    "Hires refiner": "hires_fix_refiner_pass",
    **{label: name for name, label in UNIPC_LABELS.items()},
}
_TEXT = {"prompt", "negative_prompt", "sampler_name", "scheduler", "hr_upscaler", "hr_sampler_name", "hr_scheduler"}
_TEXT |= {"hr_checkpoint_name", "hr_prompt", "hr_negative_prompt", "sd_vae", "uni_pc_variant", "uni_pc_skip_type"}
_TEXT |= {"hires_fix_refiner_pass"}
_FLAGS = {"restore_faces", "tiling", "uni_pc_lower_order_final"}


def parameters(text: str) -> dict:
    """A1111's parsed items of a parameters text: Prompt, Negative prompt and each field, sizes
    split into -1/-2 (as its parse_generation_parameters gives them)."""
    prompt, negative, fields = parse_infotext(text)
    out = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in fields.items():
        w, x, h = value.partition("x")
        if key in ("Size", "Seed resize from", "Hires resize") and x:
            out[f"{key}-1"], out[f"{key}-2"] = w.strip(), h.strip()
        else:
            out[key] = value
    return out


def with_infotext(body: Txt2ImgRequest) -> Txt2ImgRequest:
    """The body with its `infotext`'s fields where the body leaves them out (A1111's API: a field the
    body sets wins); the settings it names join override_settings where those leave them out."""
    if not body.infotext:
        return body
    if len(body.infotext) > MAX_INFOTEXT:
        raise UsageError(f"infotext is {len(body.infotext):,} characters long; at most {MAX_INFOTEXT:,} are read")
    items = parameters(body.infotext)
    given = body.model_fields_set | set(body.model_extra or {})
    ours = [(label, f) for label, f in LABELS.items() if FIELDS[f].only in (None, body.route) and f not in given]
    filled = {f: _value(label, f, items[label]) for label, f in ours if label in items}
    hires = {"Hires upscale", "Hires resize-1", "Hires upscaler"} & set(items)
    if body.route == "txt2img" and "Denoising strength" in items and hires and "enable_hr" not in given:
        filled.setdefault("enable_hr", True)  # A1111's paste rule for the hires checkbox
    overrides = dict(body.override_settings or {})
    for label, key in SETTING_LABELS.items():
        if label in items:
            overrides.setdefault(key, _value(label, key, items[label]))
    data = {**body.model_dump(include=body.model_fields_set), **(body.model_extra or {}), **filled}
    if overrides:
        data["override_settings"] = overrides
    try:
        return type(body).model_validate({**data, "infotext": None})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise UsageError(f"infotext: {where}: {err['msg']} (got {short(err.get('input'))})") from None


def _value(label: str, field: str, text: str):
    """The parameters text's value as the body field takes it (numbers as numbers)."""
    if field in _TEXT:
        return text
    if field in _FLAGS:
        return text.strip().lower() not in ("false", "0", "")
    try:
        number = float(text)
    except ValueError:
        raise UsageError(f"infotext: {label}: {short(text)} is not a number") from None
    return int(number) if number.is_integer() and abs(number) < 2**63 else number


def png_info(image_b64) -> dict:
    """POST /sdapi/v1/png-info: a picture's A1111 parameters text (`info`), its other text items,
    and the text's parsed fields."""
    im = open_picture(picture_bytes(image_b64, "image"), "image")
    texts = {k: v for k, v in im.info.items() if isinstance(k, str) and isinstance(v, str)}
    info = texts.pop("parameters", "")
    return {"info": info, "items": texts, "parameters": parameters(info) if info else {}}


BASE_LABELS = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Version"}
BASE_LABELS |= {"Denoising strength", "Clip skip"}


def extra_generation_params(infotext: str) -> dict:
    """A1111's extra_generation_params of an image: its parameters text's fields beyond the base ones."""
    fields = parse_infotext(infotext)[2] if infotext else {}
    return {k: _number_or_text(v) for k, v in fields.items() if k not in BASE_LABELS}


def _number_or_text(text: str):
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and abs(number) < 2**63 else number
