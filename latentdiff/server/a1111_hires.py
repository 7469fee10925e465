"""The A1111 API's hires fix fields as our hires fix: enable_hr's scale or target size, its upscaler
(A1111's latent modes, None, Lanczos, Nearest, or an upscaler model of the models folder by A1111's
name: upscaler_models.py), its steps and strength, and the setting hires_fix_refiner_pass."""

from __future__ import annotations

from latentdiff.config.upscalers import LATENT_UPSCALERS, PIXEL_UPSCALERS
from latentdiff.errors import UsageError
from latentdiff.images.a1111_read import hires_schedule
from latentdiff.workflows.options import ImageOptions

# A1111's hires upscalers we have: its latent modes and its None, Lanczos and Nearest (workflows/a1111_upscale.py).
HR_UPSCALERS = {**{v[0]: k for k, v in LATENT_UPSCALERS.items()}, **{v: k for k, v in PIXEL_UPSCALERS.items()}}
# A1111's hires_fix_refiner_pass -> our hires_refiner_pass
REFINER_PASSES = {"second pass": "second", "first pass": "first", "both passes": "both"}


def hires_params(body, find=None, refiner_pass: str = "second pass") -> dict:
    """enable_hr and its fields as our hires fix: the first pass at width x height, upscaled by
    hr_scale (or to hr_resize_x/y, which must keep the aspect ratio), then img2img. hr_upscaler: a
    latent mode, None, Lanczos, Nearest, or an upscaler model `find` finds (upscaler_models.py)."""
    upscaler = body.hr_upscaler or "Latent"
    ours = HR_UPSCALERS.get(upscaler, upscaler if upscaler in HR_UPSCALERS.values() else None)
    if ours is None and find is not None:
        ours = find(upscaler)
    if ours is None:
        raise UsageError(
            f"hr_upscaler {str(upscaler)[:100]!r} is not available; latentdiff has: {', '.join(HR_UPSCALERS)} "
            "and the upscaler models GET /sdapi/v1/upscalers lists"
        )
    scale = body.hr_scale
    if body.hr_resize_x or body.hr_resize_y:
        scale = _resize_scale(body)
    out = {"hires": scale, "hires_upscaler": ours, "hires_steps": None}
    if refiner_pass != "second pass":  # where an SDXL refiner takes over (A1111's default: the hires pass)
        out["hires_refiner_pass"] = REFINER_PASSES[refiner_pass]
    if body.denoising_strength is not None:
        out["hires_strength"] = body.denoising_strength
    if body.hr_second_pass_steps:  # A1111 denoises all of them; we denoise int(hires_steps * strength)
        strength = out.get("hires_strength", ImageOptions.hires_strength)
        out["hires_steps"] = hires_schedule(body.hr_second_pass_steps, strength)
    return out


def _resize_scale(body) -> float:
    if body.width is None or body.height is None:
        raise UsageError("hr_resize_x/hr_resize_y need width and height (the first pass's size); or use hr_scale")
    x, y = body.hr_resize_x, body.hr_resize_y
    if x and y and x * body.height != y * body.width:
        raise UsageError(
            f"hr_resize {x}x{y} does not keep the aspect ratio of {body.width}x{body.height}: "
            "latentdiff's hires fix scales both sides by one factor; give one side, or hr_scale"
        )
    return x / body.width if x else y / body.height
