"""The options of the image workflows (img2img, inpainting, outpainting, hires fix, upscaler
cascade), checked once, and the `Source` they describe."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from PIL import Image

import latentdiff.config.outpaint as outpaint
import latentdiff.config.params as params
from latentdiff.config.common import check
from latentdiff.errors import UsageError
from latentdiff.workflows.source import (
    RESIZE_MODES,
    Source,
    check_mask,
    crop_box,
    fit_mask,
    outpaint_canvas,
    pixel_hash,
    read_picture,
    resize_to,
    work_size,
)

IMG2IMG_STRENGTH, INPAINT_STRENGTH = 0.75, 1.0
MASKED_CONTENT = ("original", "fill", "latent_noise", "latent_nothing")
MAX_MASK_BLUR = 256  # px; as the server's field (a wider blur only slows PIL down)

REFINER_PASSES = ("second", "first", "both")  # A1111's hires_fix_refiner_pass: "second pass", ...


@dataclass
class ImageOptions:
    """Keyword options of `Pipeline.__call__` beyond text-to-image (all optional)."""

    image: Any = None
    """init image: a path or a PIL image (img2img; with `mask`, inpainting)."""
    strength: float | None = None
    """0 < strength <= 1: how far the init image is noised; default 0.75, inpainting 1.0."""
    resize: str | None = None
    """crop | fit | stretch to reach width x height (default crop; no size given: no resampling)."""
    mask: Any = None
    """white = repaint; any mode, resized to the image."""
    mask_blur: int = 4
    """Gaussian blur (px) of the mask where the result is pasted over the init image."""
    inpaint_area: str = "full"
    """full (or A1111's whole): repaint at the image's size; masked: crop the masked region, work on it
    at full size."""
    padding: int = 32
    """inpaint_area=masked: pixels of context around the masked region."""
    masked_content: str = "original"
    """what the masked area starts from (A1111's "Masked content"): original; on A1111's own path also
    fill (the picture's blurred colours), latent_noise, latent_nothing."""
    outpaint: Any = None
    """(left, right, top, bottom) pixels, or "L,R,T,B": grow the canvas and paint the new area."""
    image_hash: str | None = None
    """expected pixel hash of `image` (set by --from): a different picture is refused."""
    mask_hash: str | None = None
    hires: float | None = None
    """hires fix: generate at the native size, upscale by this factor, img2img at the target."""
    hires_strength: float = 0.5
    hires_steps: int | None = None
    """steps of the hires pass (default: the base pass's)."""
    hires_upscaler: str = "latent"
    """latent (A1111's "Latent"; also its other latent modes: latent-antialiased, latent-bicubic,
    latent-bicubic-antialiased, latent-nearest, latent-nearest-exact) | A1111's pixel upscalers none,
    lanczos, nearest | an upscaler model file (ESRGAN-type, .pth/.safetensors) | a diffusion upscaler model."""
    hires_refiner_pass: str = "second"
    """where an SDXL refiner takes over with the hires fix (A1111's "Hires fix: refiner pass", on its own
    path): second (its default), first, both."""
    upscaler: str | list | None = None
    """the cascade's stages run on each finished image, in order: a diffusion upscaler or pixel SR
    stage folder each, `DIR[,steps=N][,guidance=G][,noise_level=L]` (workflows/cascade.py)."""
    tile: int | None = None
    """upscaler tiles (px of its output) to bound memory; None: one piece."""
    upscale: bool = True
    """run the model's own upscaler when its latentdiff.json names one (False: --no-upscale)."""

    def __post_init__(self):
        check(
            self.strength is None or (_number(self.strength) and 0 < self.strength <= 1),
            f"strength must be a number in (0, 1], got {self.strength!r}",
        )
        check(
            self.resize is None or self.resize in RESIZE_MODES,
            f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}",
        )
        check(
            self.inpaint_area in ("full", "whole", "masked"),
            f"inpaint_area must be full (whole) or masked, got {str(self.inpaint_area)[:40]!r}",
        )
        self.inpaint_area = "full" if self.inpaint_area == "whole" else self.inpaint_area
        check(
            _whole(self.mask_blur) and 0 <= self.mask_blur <= MAX_MASK_BLUR,
            f"mask_blur must be a whole number from 0 to {MAX_MASK_BLUR}, got {self.mask_blur!r}",
        )
        check(
            self.masked_content in MASKED_CONTENT,
            f"masked_content must be one of {', '.join(MASKED_CONTENT)}, got {str(self.masked_content)[:40]!r}",
        )
        check(
            _whole(self.padding) and 0 <= self.padding <= params.MAX_SIDE,
            f"padding must be a whole number from 0 to {params.MAX_SIDE}, got {self.padding!r}",
        )
        if self.outpaint is not None:
            self.outpaint = outpaint.outpaint(params.api_label, self.outpaint)
        starts = self.image is not None
        check(
            starts or (self.mask is None and self.outpaint is None and self.strength is None),
            "mask, outpaint and strength need an init image (image=..., --init-image)",
        )
        check(
            self.hires is None or (_number(self.hires) and 1 < self.hires <= 8),
            f"hires scale must be a number in (1, 8], got {self.hires!r}",
        )
        check(
            _number(self.hires_strength) and 0 < self.hires_strength <= 1,
            f"hires strength must be a number in (0, 1], got {self.hires_strength!r}",
        )
        check(
            self.hires_steps is None or (_whole(self.hires_steps) and 1 <= self.hires_steps <= params.MAX_STEPS),
            f"hires steps must be a whole number from 1 to {params.MAX_STEPS}, got {str(self.hires_steps)[:40]}",
        )
        check(
            isinstance(self.hires_upscaler, str) and 0 < len(self.hires_upscaler) <= params.MAX_PATH_CHARS,
            f"hires upscaler must be a name or a model, got {str(self.hires_upscaler)[:40]!r}",
        )
        check(
            self.hires_refiner_pass in REFINER_PASSES,
            f"hires refiner pass must be one of {', '.join(REFINER_PASSES)}, got {str(self.hires_refiner_pass)[:40]!r}",
        )
        check(self.tile is None or (_whole(self.tile) and self.tile >= 64), f"tile must be >= 64 px, got {self.tile}")
        check(isinstance(self.upscale, bool), f"upscale must be true or false, got {self.upscale!r}")
        check(self.upscale or not self.upscaler, "no upscale and an upscaler contradict each other; drop one")
        stages = [self.upscaler] if isinstance(self.upscaler, str) else self.upscaler or []
        check(
            isinstance(stages, list) and all(isinstance(s, str) and s for s in stages) and len(stages) <= 8,
            f"upscaler must be a folder or a list of up to 8 folders, got {str(self.upscaler)[:60]!r}",
        )
        check(
            not (starts and self.hires),
            "hires fix starts from a generated image; it cannot be combined with an init image",
        )

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "ImageOptions":
        unknown = sorted(set(kwargs) - cls.names())
        check(not unknown, f"unknown option(s): {', '.join(unknown)}; see latentdiff.workflows.options.ImageOptions")
        return cls(**kwargs)

    @property
    def inpainting(self) -> bool:
        return self.mask is not None or self.outpaint is not None

    def default_strength(self) -> float:
        if self.strength is not None:
            return float(self.strength)
        return INPAINT_STRENGTH if self.inpainting else IMG2IMG_STRENGTH

    def source(self, width: int | None, height: int | None, factor: int) -> Source | None:
        """Read, check and size the init image and mask; None for text-to-image."""
        if self.image is None:
            return None
        image, image_path = read_picture(self.image, "init image")
        record = {"init_image": image_path, "init_image_hash": pixel_hash(image), "strength": self.default_strength()}
        _expect(self.image_hash, record["init_image_hash"], "init image", self.image)
        mask = None
        if self.mask is not None:
            raw, mask_path = read_picture(self.mask, "mask")
            raw = raw.convert("L")
            record.update(mask=mask_path, mask_hash=pixel_hash(raw))
            _expect(self.mask_hash, record["mask_hash"], "mask", self.mask)
            mask = fit_mask(raw, image.size)
        if self.outpaint is not None:
            outpaint.outpaint(params.api_label, self.outpaint, image.size)  # the grown canvas: side and memory
            image, mask = outpaint_canvas(image, mask, self.outpaint, factor)
            record["outpaint"] = list(self.outpaint)
        size = work_size(image.size, width, height, factor)
        # The picture's own size trimmed to the factor is cut out, never resampled (so --from,
        # which passes the recorded size, sees the same pixels); other sizes follow the rule.
        mode = None if size == work_size(image.size, None, None, factor) else (self.resize or "crop")
        image = resize_to(image, size, mode)
        record["resize"] = self.resize or "crop"
        if mask is None:
            return Source(image, None, record)
        mask = resize_to(mask, size, mode, fill_edges=False)
        check_mask(mask)
        record.update(mask_blur=self.mask_blur, inpaint_area=self.inpaint_area)
        if self.masked_content != "original":
            record["masked_content"] = self.masked_content
        box, padding = None, None
        if self.inpaint_area == "masked":
            box, padding = crop_box(mask, size, self.padding, self.mask_blur), self.padding
            record["padding"] = self.padding
        return Source(image, mask, record, box=box, blur=self.mask_blur, fill=self.masked_content, padding=padding)

    def preflight(self) -> None:
        """Refuse an unreadable init image or mask before any model is loaded."""
        for ref, what in ((self.image, "init image"), (self.mask, "mask")):
            if ref is not None and not isinstance(ref, Image.Image):
                read_picture(ref, what)
        from latentdiff.formats.sr_model import is_sr_file  # here: it imports torch

        if self.hires and is_sr_file(self.hires_upscaler) and not os.path.isfile(self.hires_upscaler):
            raise UsageError(f"hires upscaler model file {self.hires_upscaler} is missing")

    def recorded(self) -> dict:
        """The hires/cascade settings for the PNG metadata (the source records its own)."""
        out = {}
        if self.hires:
            out.update(
                hires=self.hires,
                hires_strength=self.hires_strength,
                hires_steps=self.hires_steps,
                hires_upscaler=self.hires_upscaler,
                **({"hires_refiner_pass": self.hires_refiner_pass} if self.hires_refiner_pass != "second" else {}),
            )
        if self.upscaler:
            out.update(upscaler=self.upscaler, tile=self.tile)
        if not self.upscale:
            out["upscale"] = False
        return out

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    """A finite int or float; bools are not numbers."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _expect(expected: str | None, actual: str, what: str, ref) -> None:
    if expected is not None and expected != actual:
        raise UsageError(
            f"{what} {ref} is not the picture recorded (pixel hash {actual}, recorded {expected}); "
            f"pass --{'init-image' if what == 'init image' else 'mask'} to use it anyway"
        )
