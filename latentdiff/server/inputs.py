"""Images sent to the server as base64 (AUTOMATIC1111's `init_images` and `mask`, our `init_image`):
decoded by the loader `generate --init-image` uses (EXIF rotation, alpha, 16-bit), and refused with
one line (400) when they are not images or are too large."""

from __future__ import annotations

import base64
import binascii

from PIL import Image, ImageOps

from latentdiff.errors import UsageError

# Larger pictures are refused before their pixels are decoded: the work size is at most 2048 a side.
MAX_PIXELS = 4096 * 4096


def decode_picture(text, what: str) -> Image.Image:
    """A base64 image file (a data: URL is fine) in its own mode."""
    # Imported with the first picture: images.read imports torch (through its tensor helpers), which the server loads with its first model.
    from latentdiff.images.read import BadImageError, open_image_data

    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{what}: expected a base64 image, got {'nothing' if not text else type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what} is not base64 image data") from None
    try:
        return open_image_data(data, MAX_PIXELS)
    except BadImageError as e:
        raise UsageError(f"{what} is not usable: {e}") from None


def mask_from(im: Image.Image, invert: bool = False) -> Image.Image:
    """The repaint mask (L, white repaints). A mask with transparency is read from its alpha
    (painted = opaque), as AUTOMATIC1111 reads masks drawn on a transparent layer."""
    # Imported with the first picture: images.read imports torch (through its tensor helpers), which the server loads with its first model.
    from latentdiff.images.read import to_rgb8

    alpha = im.convert("RGBA").getchannel("A") if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else None
    mask = alpha if alpha is not None and alpha.getextrema()[0] < 255 else to_rgb8(im).convert("L")
    return ImageOps.invert(mask) if invert else mask


def image_inputs(init_image=None, mask=None, invert_mask: bool = False) -> dict:
    """Pipeline keyword arguments (`image`, `mask`: PIL) for the base64 pictures given."""
    # Imported with the first picture: images.read imports torch (through its tensor helpers), which the server loads with its first model.
    from latentdiff.images.read import to_rgb8

    out = {}
    if init_image is not None:
        out["image"] = to_rgb8(decode_picture(init_image, "init image"))
    if mask is not None:
        out["mask"] = mask_from(decode_picture(mask, "mask"), invert_mask)
    return out
