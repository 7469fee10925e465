"""The A1111 ControlNet extension's API (Mikubill/sd-webui-controlnet) as its clients send it:
units in `alwayson_scripts: {"controlnet": {"args": [unit, ...]}}` on /sdapi/v1/txt2img and
img2img, and its routes /controlnet/model_list, module_list, detect and version.

A unit's fields are the extension's (internal_controlnet/args.py ControlNetUnit, and the older
names it still reads: input_image, guidance, lowvram, mask_image). Each one is honoured, or is at
a value that changes nothing, or is refused with a 400 naming it; `low_vram`, `is_ui` and
`save_detected_map` change nothing here (the maps are not appended to `images`: /controlnet/detect
makes them). Disabled units (`enabled: false`) are skipped."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from latentdiff.config.control_flags import MAX_WEIGHT, module
from latentdiff.errors import UsageError
from latentdiff.server.controls import control_file, detect, module_list
from latentdiff.server.guards import validation_line
from latentdiff.server.image_prompts import IP_MODULES, MAX_PROMPTS, a1111_prompt, is_ip_unit
from latentdiff.server.inputs import open_picture, picture_bytes
from latentdiff.server.schema import MAX_IMAGES, MAX_UNITS
from latentdiff.server.values import BoundedRoute, Flag, real, whole

API_VERSION = 2  # what the extension's /controlnet/version answers (external_code.get_api_version)
MAX_ARGS = 64  # entries of a ControlNet script's `args` (the extension's UI has at most a few units)
CONTROL_MODES = {
    "Balanced": "balanced",
    "My prompt is more important": "prompt",
    "ControlNet is more important": "control",
}
RESIZES = {
    "Just Resize": "stretch",
    "Crop and Resize": "crop",
    "Resize and Fill": "fit",
    "Inner Fit (Scale to Fit)": "crop",
    "Scale to Fit (Inner Fit)": "crop",
    "Outer Fit (Shrink to Fit)": "fit",
    "Envelope (Outer Fit)": "fit",
}
RESIZE_NUMBERS = ("stretch", "crop", "fit", "stretch")  # 3: "Just Resize (Latent upscale)"
ALIASES = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram", "mask_image": "mask"}
ALIASES["guessmode"] = "guess_mode"
HARMLESS = ("low_vram", "is_ui", "save_detected_map")


class A1111Unit(BaseModel):
    """A ControlNet unit as the extension reads it (None where a client sends null)."""

    model_config = ConfigDict(extra="forbid")

    enabled: Flag = True
    module: str | None = Field("none", max_length=200)
    model: str | None = Field("None", max_length=400)
    weight: real(0, MAX_WEIGHT) = 1.0
    image: Any = None
    resize_mode: Any = "Crop and Resize"
    low_vram: Flag = False
    processor_res: whole(-(2**31), 2**31) = -1
    threshold_a: real(-1e6, 1e6) = -1
    threshold_b: real(-1e6, 1e6) = -1
    guidance_start: real(0, 1) = 0.0
    guidance_end: real(0, 1) = 1.0
    pixel_perfect: Flag = False
    control_mode: Any = "Balanced"
    # fields we do not honour: refused unless at a value that changes nothing (UNHONOURED)
    is_ui: Flag = False
    save_detected_map: Flag = True
    input_mode: Any = "simple"
    batch_images: Any = None
    output_dir: Any = ""
    loopback: Any = False
    inpaint_crop_input_image: Any = True
    hr_option: Any = "Both"
    advanced_weighting: Any = None
    effective_region_mask: Any = None
    pulid_mode: Any = "Fidelity"
    ipadapter_input: Any = None
    mask: Any = None
    guess_mode: Any = None


def _masked_inpainting(body) -> bool:
    return getattr(body, "mask", None) is not None and bool(getattr(body, "inpaint_full_res", False))


# field -> (true where the value changes nothing, what the field is for)
UNHONOURED: dict[str, tuple[Callable, str]] = {
    "input_mode": (lambda v, b: v in ("simple", None), "batch and merge input modes"),
    "batch_images": (lambda v, b: not v, "batch input folders"),
    "output_dir": (lambda v, b: not v, "batch output folders"),
    "loopback": (lambda v, b: not v, "loopback"),
    "hr_option": (lambda v, b: v in ("Both", None) or not b.enable_hr, "a unit on one hires pass only"),
    "advanced_weighting": (lambda v, b: v is None, "per-layer weights"),
    "effective_region_mask": (lambda v, b: v is None, "effective region masks"),
    "pulid_mode": (lambda v, b: v in ("Fidelity", None), "PuLID"),
    "ipadapter_input": (lambda v, b: v is None, "IP-Adapter embeddings in a unit"),
    "mask": (lambda v, b: not v, "a unit's mask (inpaint preprocessors, region masks)"),
    "guess_mode": (lambda v, b: not v, "the removed guess mode flag (use control_mode)"),
    "inpaint_crop_input_image": (
        lambda v, b: not v or not _masked_inpainting(b),
        "cropping the control image to the masked area (send false, or inpaint_full_res false)",
    ),
}


def router(server) -> APIRouter:
    r = APIRouter(prefix="/controlnet", tags=["A1111 ControlNet extension"], route_class=BoundedRoute)

    @r.get("/version")
    async def version():
        return {"version": API_VERSION}

    @r.get("/model_list", summary="Control models of --controlnet-dir and IP-Adapters of --ip-adapter-dir")
    async def model_list(update: bool = True):
        return {"model_list": server.control_models.titles() + server.adapter_models.titles()}

    @r.get("/module_list", summary="Preprocessors (alias_names: their labels), the IP-Adapter ones included")
    async def modules(alias_names: bool = False):
        out = module_list(alias_names)
        out["module_list"] += IP_MODULES
        out["module_detail"].update({m: {"model_free": False, "sliders": []} for m in IP_MODULES})
        return out

    @r.post("/detect", summary="Preprocess pictures into control maps (base64 PNGs)")
    def detect_maps(body: DetectRequest):  # a plain def: FastAPI runs it in a thread, off the event loop
        images = body.controlnet_input_images or body.controlnet_images
        if body.controlnet_input_images and body.controlnet_images:
            raise UsageError("give controlnet_input_images or controlnet_images (webuiapi's name), not both")
        a, b, res = body.controlnet_threshold_a, body.controlnet_threshold_b, body.controlnet_processor_res
        return {"images": detect(body.controlnet_module, images, res, a, b), "info": "Success"}

    return r


class DetectRequest(BaseModel):
    """The body of /controlnet/detect (the extension's defaults)."""

    model_config = ConfigDict(extra="forbid")

    controlnet_module: str = Field("none", max_length=200)
    controlnet_input_images: list[str] = Field([], max_length=MAX_IMAGES)
    controlnet_images: list[str] = Field([], max_length=MAX_IMAGES, description="webuiapi's name for the images")
    controlnet_processor_res: whole(-1, 2**31) = 512
    controlnet_threshold_a: real(-1e6, 1e6) = 64
    controlnet_threshold_b: real(-1e6, 1e6) = 64


class Units(NamedTuple):
    """Enabled units: control units (shown, ControlFiles, mode), IP-Adapters (shown, PromptFiles)."""

    shown: list
    files: tuple
    mode: str = "balanced"
    prompts_shown: list = []
    prompts: tuple = ()


def units(models, body, init_image: str | None = None, adapters=None) -> Units:
    """The ControlNet units of an A1111 request (`adapters`: image_prompts.AdapterModels);
    `init_image` (img2img) stands in for a unit's missing image, as in the extension."""
    scripts = (body.model_extra or {}).get("alwayson_scripts") or {}
    found = [v for k, v in scripts.items() if k.lower() == "controlnet"] if isinstance(scripts, dict) else []
    if not found:
        return Units([], ())
    if len(found) > 1 or not isinstance(found[0], dict) or not isinstance(found[0].get("args"), list):
        raise UsageError('alwayson_scripts.controlnet must be {"args": [unit, ...]}')
    args = found[0]["args"]
    if len(args) > MAX_ARGS:
        raise UsageError(f"alwayson_scripts.controlnet.args holds {len(args)} entries; at most {MAX_ARGS} are read")
    shown, files, modes, prompts = [], [], set(), []
    for k, arg in enumerate(args):
        what = f"alwayson_scripts.controlnet.args[{k}]"
        unit = _parse(arg, what, body)
        if not unit.enabled:
            continue
        if adapters is not None and is_ip_unit(adapters, unit):
            prompts.append(a1111_prompt(adapters, unit, _image(unit, what, init_image), what))
            continue
        ours, image = _ours(unit, what, body, init_image)
        s, f = control_file(models, ours, image, what)
        shown.append(s)
        files.append(f)
        modes.add(_choice(unit.control_mode, CONTROL_MODES, tuple(CONTROL_MODES.values()), f"{what}.control_mode"))
    if len(files) > MAX_UNITS:
        raise UsageError(f"{len(files)} enabled ControlNet units; at most {MAX_UNITS} are supported")
    if len(modes) > 1:
        raise UsageError("ControlNet units with different control_mode: latentdiff runs one control mode for all units")
    if len(prompts) > MAX_PROMPTS:
        raise UsageError(f"{len(prompts)} enabled IP-Adapter units; at most {MAX_PROMPTS} are supported")
    mode = modes.pop() if modes else "balanced"
    return Units(shown, tuple(files), mode, [s for s, _ in prompts], tuple(p for _, p in prompts))


def _parse(arg, what: str, body) -> A1111Unit:
    if not isinstance(arg, dict):
        raise UsageError(f"{what} must be a ControlNet unit (a JSON object), got {type(arg).__name__}")
    d = dict(arg)
    for old, new in ALIASES.items():
        if old in d:
            if new in d:
                raise UsageError(f"{what}: give {new} or its older name {old}, not both")
            d[new] = d.pop(old)
    try:
        unit = A1111Unit.model_validate(d)
    except ValidationError as e:
        raise UsageError(f"{what}.{validation_line(e.errors())}") from None
    if unit.enabled:
        for name, (ok, why) in UNHONOURED.items():
            # left out, inpaint_crop_input_image is the extension's true: it crops, which we do not
            sent = name in d or name == "inpaint_crop_input_image"
            if sent and not _holds(ok, getattr(unit, name), body):
                raise UsageError(f"{what}.{name}={_shown(getattr(unit, name))}: {why} is not supported by latentdiff")
    return unit


def _holds(ok, value, body) -> bool:
    try:
        return bool(ok(value, body))
    except (TypeError, ValueError, AttributeError):
        return False


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice(value, names: dict, numbered: tuple, what: str) -> str:
    """A value given by the extension's name or its number."""
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(numbered):
        return numbered[value]
    raise UsageError(
        f"{what} must be one of {', '.join(map(repr, names))} or 0..{len(numbered) - 1}, got {_shown(value)}"
    )


def _image(unit: A1111Unit, what: str, init_image):
    """The unit's base64 picture: `image` as a string, {"image", "mask"} or [image, mask] (no mask)."""
    image = unit.image
    if isinstance(image, dict):
        extra = set(image) - {"image", "mask"}
        if extra or image.get("mask"):
            raise UsageError(f"{what}.image: a unit's mask is not supported by latentdiff; send the image alone")
        image = image.get("image")
    elif isinstance(image, list):
        if len(image) != 2 or not isinstance(image[0], str) or image[1]:
            raise UsageError(f"{what}.image: give one base64 image (several inputs per unit are not supported)")
        image = image[0]
    if not image:
        if init_image is None:
            raise UsageError(f"{what}.image: give the control image (base64)")
        return init_image
    if not isinstance(image, str):
        raise UsageError(f"{what}.image must be a base64 image, got {type(image).__name__}")
    return image


def _ours(unit: A1111Unit, what: str, body, init_image) -> tuple[dict, str]:
    """(our unit settings, its base64 picture)."""
    image = _image(unit, what, init_image)
    resize = _choice(unit.resize_mode, RESIZES, RESIZE_NUMBERS, f"{what}.resize_mode")
    if unit.guidance_start > unit.guidance_end:
        raise UsageError(f"{what}: guidance_start ({unit.guidance_start}) is above guidance_end ({unit.guidance_end})")
    m = module(unit.module or "none", f"{what}.module")
    res = unit.processor_res
    if unit.pixel_perfect and m.res:
        res = _pixel_perfect(image, body, resize, what)
    ours = {
        "model": unit.model,
        "weight": unit.weight,
        "start": unit.guidance_start,
        "end": unit.guidance_end,
        "resize": resize,
        "module": m.name,
        "processor_res": res,
        "threshold_a": unit.threshold_a,
        "threshold_b": unit.threshold_b,
    }
    return ours, image


def _pixel_perfect(image: str, body, resize: str, what: str) -> int:
    """The extension's pixel-perfect processor resolution: the picture's short side scaled as it
    is to reach width x height (the larger factor; Resize and Fill: the smaller)."""
    if body.width is None or body.height is None:
        raise UsageError(f"{what}.pixel_perfect needs the request's width and height")
    w, h = open_picture(picture_bytes(image, f"{what}.image"), f"{what}.image").size
    k = (min if resize == "fit" else max)(body.height / h, body.width / w)
    res = round(k * min(w, h))
    if not 64 <= res <= 2048:
        raise UsageError(
            f"{what}.pixel_perfect gives a processor resolution of {res} px for this picture and size, "
            "outside 64..2048; send processor_res instead"
        )
    return res
