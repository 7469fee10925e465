"""The picture a run starts from: init image and mask read, sized, hashed; the result pasted back.

Images are read with the same robust loader as `finetune` (EXIF rotation, alpha onto white,
CMYK, 16-bit), so a file that trains also starts an img2img run. Sizing rules (`resize`):
  crop     scale to cover the target, centre-crop (default)
  fit      scale to fit inside, pad by repeating the edge pixels
  stretch  scale each side to the target, ignoring the aspect ratio
Without a target size the image keeps its own size, centre-cropped down to a multiple of the
VAE factor (no resampling), so an image of a valid size is used pixel for pixel.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from latentdiff.errors import UsageError

RESIZE_MODES = ("crop", "fit", "stretch")
LANCZOS = Image.Resampling.LANCZOS


def pixel_hash(im: Image.Image) -> str:
    """16 hex digits of SHA-256 over the decoded pixels and size: the same picture saved in
    another format (or passed as a PIL image) has the same hash."""
    h = hashlib.sha256(f"{im.mode}:{im.width}x{im.height}:".encode())
    h.update(im.tobytes())
    return h.hexdigest()[:16]


def read_picture(ref, what: str) -> tuple[Image.Image, str | None]:
    """(8-bit RGB image, absolute path or None) from a path or a PIL image."""
    if isinstance(ref, Image.Image):
        # Here, not at the top: it imports torch, which source.py must not pay for at start-up.
        from latentdiff.images.read import to_rgb8

        return to_rgb8(ref), None
    if not isinstance(ref, (str, os.PathLike)):
        raise UsageError(f"{what} must be a file path or a PIL image, not {type(ref).__name__}")
    # Here, not at the top: it imports torch, which source.py must not pay for at start-up.
    from latentdiff.images.read import BadImageError, load_image

    try:
        return load_image(ref), os.path.abspath(ref)
    except BadImageError as e:
        raise UsageError(f"{what} {ref} is not usable: {e}") from None


def work_size(size: tuple[int, int], width, height, factor: int) -> tuple[int, int]:
    """The size to run at: as given; one side given: the other follows the aspect ratio;
    none: the image's own size rounded down to the factor."""
    w, h = size
    if width is None and height is None:
        width, height = w - w % factor, h - h % factor
    elif width is None:
        width = max(factor, round(height * w / h / factor) * factor)
    elif height is None:
        height = max(factor, round(width * h / w / factor) * factor)
    if min(width, height) < factor:
        raise UsageError(f"the init image is {w}x{h}: smaller than one latent pixel ({factor} px); use a larger image")
    return int(width), int(height)


def resize_to(im: Image.Image, size: tuple[int, int], mode: str | None, fill_edges: bool = True) -> Image.Image:
    """`im` at `size` by the `mode` rule (module docstring); None: centre-crop, no resampling."""
    if im.size == size:
        return im
    if mode is None:
        left, top = (im.width - size[0]) // 2, (im.height - size[1]) // 2
        return im.crop((left, top, left + size[0], top + size[1]))
    W, H = size
    if mode == "stretch":
        return im.resize(size, LANCZOS)
    cover = mode == "crop"
    scale = (max if cover else min)(W / im.width, H / im.height)
    scaled = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), LANCZOS)
    if cover:
        left, top = (scaled.width - W) // 2, (scaled.height - H) // 2
        return scaled.crop((left, top, left + W, top + H))
    left, top = (W - scaled.width) // 2, (H - scaled.height) // 2
    return pad(scaled, (left, W - scaled.width - left, top, H - scaled.height - top), fill_edges)


def pad(im: Image.Image, borders: tuple[int, int, int, int], edge: bool = True, value: int = 255) -> Image.Image:
    """Grow `im` by (left, right, top, bottom) pixels: edge pixels repeated, or a constant."""
    left, right, top, bottom = borders
    a = np.asarray(im)
    widths = ((top, bottom), (left, right)) + (((0, 0),) if a.ndim == 3 else ())
    out = np.pad(a, widths, mode="edge") if edge else np.pad(a, widths, constant_values=value)
    return Image.fromarray(out, mode=im.mode)


def outpaint_canvas(image: Image.Image, mask: Image.Image | None, borders, factor: int):
    """The grown canvas (new area filled with the repeated edge) and its mask (new area white).
    Right and bottom grow a little more where needed to reach a multiple of the factor."""
    left, right, top, bottom = borders
    right += -(image.width + left + right) % factor
    bottom += -(image.height + top + bottom) % factor
    grown = (left, right, top, bottom)
    base = mask if mask is not None else Image.new("L", image.size, 0)
    return pad(image, grown), pad(base, grown, edge=False, value=255)


def fit_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The mask as 8-bit grey at the image's size; a different size is stretched, said once."""
    mask = mask.convert("L")
    if mask.size != size:
        print(
            f"latentdiff: note: the mask is {mask.width}x{mask.height}, the image {size[0]}x{size[1]}: "
            "the mask was resized to the image",
            file=sys.stderr,
        )
        mask = mask.resize(size, LANCZOS)
    return mask


def check_mask(mask: Image.Image) -> None:
    if np.asarray(mask).max() < 128:
        raise UsageError("the mask is all black: nothing to repaint (white marks the area to repaint)")


def soft_mask(mask: Image.Image, blur: int) -> Image.Image:
    """The paste-back alpha: the binarised mask, Gaussian-blurred by `blur` pixels."""
    binary = mask.point(lambda v: 255 if v >= 128 else 0)
    return binary.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else binary


def crop_box(mask: Image.Image, size: tuple[int, int], padding: int, blur: int = 0) -> tuple[int, int, int, int]:
    """The region the paste-back alpha touches (the mask blurred by `blur`, as AUTOMATIC1111 takes
    it, not the mask itself) plus `padding`, grown to the work size's aspect ratio (diffusers'
    rule for `padding_mask_crop`). Outside the box the alpha is 0, so the pasted crop meets the
    kept pixels without a seam at any padding, 0 included."""
    from diffusers.image_processor import VaeImageProcessor

    touched = soft_mask(mask, blur)
    return tuple(int(v) for v in VaeImageProcessor.get_crop_region(touched, size[0], size[1], pad=padding))


@dataclass
class Source:
    """What a run starts from, at the size it runs at."""

    image: Image.Image  # RGB, the full picture at the output size
    mask: Image.Image | None  # L, white = repaint, same size
    record: dict  # what the PNG metadata says about it
    box: tuple[int, int, int, int] | None = None  # inpaint-area "masked": the region worked on
    blur: int = 0
    fill: str = "original"  # what the masked area starts from (ImageOptions.masked_content)
    padding: int | None = None  # inpaint-area "masked": context pixels around the mask (None: full)

    def region(self) -> tuple[Image.Image, Image.Image | None]:
        """The image (and mask) the sampler sees: the whole picture, or the masked region scaled up."""
        if self.box is None:
            return self.image, self.mask
        size = self.image.size
        return (self.image.crop(self.box).resize(size, LANCZOS), self.mask.crop(self.box).resize(size, LANCZOS))

    def paste(self, result: Image.Image) -> Image.Image:
        """The sampler's result put back: outside the (blurred) mask the pixels are the source's own
        (A1111's own path lays its result over by its rule: a1111_masked.py)."""
        if self.mask is None:
            return result
        alpha = soft_mask(self.mask, self.blur)
        if self.box is not None:
            w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
            full = self.image.copy()
            full.paste(result.resize((w, h), LANCZOS), self.box[:2])
            result = full
        out = Image.composite(result, self.image, alpha)
        out.info.update(result.info)
        return out
