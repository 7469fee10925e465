"""The picture side of inpainting on A1111's own path, both inpaint areas, as A1111 1.10 does it (its
modules/processing.py StableDiffusionProcessingImg2Img.init and apply_overlay, masking.py and
images.resize_image, read for behaviour; our code):
- "whole picture": the run sees the picture and the blurred mask; the result is laid over the source
  with the blurred mask doubled as its alpha;
- "only masked" (inpaint_full_res): the region the blurred mask touches (its bounding box plus
  `padding`, clamped to the picture) grown to the run's aspect ratio, cut from the picture and the
  blurred mask and resized to the run's size ("resize and fill": fit inside, edges stretched into the
  gaps); the result resized back over the region ("crop and resize": cover, centre-crop) and laid over
  the source with the blurred mask (not doubled) as its alpha.
Laid over = the source premultiplied by 255 - alpha (PIL's RGBa), alpha-composited over the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from latentdiff.workflows.a1111_inpaint import blurred_mask

LANCZOS = Image.Resampling.LANCZOS


def crop_region(mask: Image.Image, padding: int) -> tuple[int, int, int, int] | None:
    """The bounding box of the mask's non-zero pixels grown by `padding` within the picture (None: empty)."""
    box = mask.getbbox()
    if box is None or not padding:
        return box
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def _grow(lo: int, hi: int, want: float, side: int) -> tuple[int, int]:
    """One axis of A1111's expand_crop_region: [lo, hi) grown by int(want - length), split about the
    middle, moved back inside [0, side] (A1111 moves it when it reaches the far edge exactly too)."""
    diff = int(want - (hi - lo))
    lo, hi = lo - diff // 2, hi + diff - diff // 2
    if hi >= side:
        lo, hi = lo - (hi - side), side
    if lo < 0:
        lo, hi = 0, hi - lo
    return lo, min(hi, side)


def expand_region(box, width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """`box` grown along one axis to the aspect ratio width:height, within a picture of `size`."""
    x1, y1, x2, y2 = box
    ratio = width / height
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _grow(y1, y2, (x2 - x1) / ratio, size[1])
    else:
        x1, x2 = _grow(x1, x2, (y2 - y1) * ratio, size[0])
    return x1, y1, x2, y2


def resize_fill(im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize mode 2 ("resize and fill"): fit inside width x height (Lanczos), centred, the gaps
    filled by stretching the resized picture's edge rows or columns; RGB out, as A1111's."""
    ratio, src_ratio = width / height, im.width / im.height
    w = width if ratio < src_ratio else im.width * height // im.height
    h = height if ratio >= src_ratio else im.height * width // im.width
    small = im.resize((w, h), LANCZOS)
    out = Image.new("RGB", (width, height))
    out.paste(small, (width // 2 - w // 2, height // 2 - h // 2))
    if ratio < src_ratio and height // 2 - h // 2 > 0:
        gap = height // 2 - h // 2
        out.paste(small.resize((width, gap), box=(0, 0, width, 0)), (0, 0))
        out.paste(small.resize((width, gap), box=(0, h, width, h)), (0, gap + h))
    elif ratio > src_ratio and width // 2 - w // 2 > 0:
        gap = width // 2 - w // 2
        out.paste(small.resize((gap, height), box=(0, 0, 0, height)), (0, 0))
        out.paste(small.resize((gap, height), box=(w, 0, w, height)), (gap + w, 0))
    return out


def resize_cover(im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize mode 1 ("crop and resize"): cover width x height (Lanczos), centred, cut; RGB."""
    ratio, src_ratio = width / height, im.width / im.height
    w = width if ratio > src_ratio else im.width * height // im.height
    h = height if ratio <= src_ratio else im.height * width // im.width
    out = Image.new("RGB", (width, height))
    out.paste(im.resize((w, h), LANCZOS), (width // 2 - w // 2, height // 2 - h // 2))
    return out


@dataclass
class Prepared:
    """What A1111's run sees of a source with a mask, and how its result goes back."""

    image: Image.Image  # RGB at the run's size: the picture or its region
    mask: Image.Image  # L at the run's size: A1111's image mask (blurred; the region's, resized)
    overlay: Image.Image  # RGBA at the picture's size: the source, transparent where repainted
    paste_to: tuple[int, int, int, int] | None  # only masked: (x, y, w, h) of the region


def prepare(image: Image.Image, mask: Image.Image, blur: int, padding: int | None) -> Prepared:
    """The run's inputs for `image` and `mask` (the run's size is the picture's); `padding` None: the
    whole picture, else only the masked region with that many pixels around it."""
    soft = blurred_mask(mask, blur)
    size = image.size
    region = None if padding is None else crop_region(soft, padding)
    if region is None:  # the whole picture (A1111 falls back to it for a blank region too)
        alpha = Image.fromarray(np.clip(np.asarray(soft).astype(np.float32) * 2, 0, 255).astype(np.uint8))
        return Prepared(image, soft, _overlay(image, alpha), None)
    x1, y1, x2, y2 = expand_region(region, *size, size)
    cut = resize_fill(image.crop((x1, y1, x2, y2)), *size)
    cut_mask = resize_fill(soft.crop((x1, y1, x2, y2)), *size).convert("L")
    return Prepared(cut, cut_mask, _overlay(image, soft), (x1, y1, x2 - x1, y2 - y1))


def of_source(src) -> Prepared:
    """`prepare` for a workflows.source.Source with a mask (its padding set: only masked)."""
    return prepare(src.image, src.mask, src.blur, src.padding)


def _overlay(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """The source premultiplied where it stays (255 - alpha), as A1111 pastes it into RGBa."""
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(alpha))
    return kept.convert("RGBA")


def lay_over(result: Image.Image, prepared: Prepared) -> Image.Image:
    """A1111's apply_overlay: the result (put back over its region) under the overlay."""
    if prepared.paste_to is not None:
        x, y, w, h = prepared.paste_to
        base = Image.new("RGBA", prepared.overlay.size)
        base.paste(resize_cover(result, w, h), (x, y))
        result = base
    out = result.convert("RGBA")
    out.alpha_composite(prepared.overlay)
    out = out.convert("RGB")
    out.info.update(result.info)
    return out
