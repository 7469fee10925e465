"""Images a user gives latentdiff (training images, img2img/inpaint init images): open any of them
as 8-bit RGB (or say why not), and turn it into a training tensor. The images latentdiff makes are
written by image_output.py.

Training data comes from cameras, screenshots, scanners and scrapers, so a loader has to cope
with EXIF rotation, transparency, CMYK, 16-bit scans and files that are simply broken. Every
refusal is a `BadImageError` whose message is a reason a person can read in skipped.txt.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from latentdiff.errors import LatentDiffError, UsageError
from latentdiff.runtime.reading import open_regular

# Pillow's own default: ~0.25 GB of 24-bit pixels. Larger declared sizes are treated as
# decompression bombs (a few KB of PNG that would expand to gigabytes of RAM).
MAX_PIXELS = 89_478_485
# Smaller than one latent pixel block on either side is never a usable training image.
MIN_SIDE = 8

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WHITE = (255, 255, 255)


class BadImageError(LatentDiffError):
    """One file that cannot be used as a training image; str(err) is the human reason."""


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `path` fully and return it upright, as 8-bit RGB, alpha flattened onto white.

    Raises BadImageError for empty, unreadable, non-image, truncated, corrupt, oversized
    (decompression bomb) and too-small files. `max_pixels` can only lower the limit: Pillow's
    own `Image.MAX_IMAGE_PIXELS` check still applies first.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would wait forever
            raise BadImageError("not a regular file (a folder, FIFO, socket or device)")
        # Checked again on the opened file, opened without waiting: a FIFO swapped in since is refused too.
        data = os.fdopen(open_regular(path, "the file", BadImageError), "rb")
    except FileNotFoundError:
        raise BadImageError("missing file") from None
    except OSError as err:
        raise BadImageError(f"cannot read file: {err.strerror or err}") from None
    except ValueError:  # os.stat's "embedded null byte"
        raise BadImageError("not a usable path (it holds a NUL character)") from None
    with data:
        if os.fstat(data.fileno()).st_size == 0:
            raise BadImageError("empty file (0 bytes)")
        im = _checked(_decode(data, max_pixels))
    return to_rgb8(im)


def open_image_data(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An image file's bytes (e.g. sent to the server) decoded as `load_image` decodes a file, but
    in its own mode (alpha kept: a mask may be drawn on it); `to_rgb8` makes it 8-bit RGB."""
    if not data:
        raise BadImageError("empty image data (0 bytes)")
    return _checked(_decode(io.BytesIO(data), max_pixels))


def _checked(im: Image.Image) -> Image.Image:
    im = _upright(im)
    width, height = im.size
    if min(width, height) < MIN_SIDE:
        raise BadImageError(f"too small: {width}x{height} (need at least {MIN_SIDE} px a side)")
    return im


def _decode(fp, max_pixels: int) -> Image.Image:
    """Open and force a full decode, so truncation shows up now and not mid-training."""
    try:
        with _strict_loading():
            im = Image.open(fp)
            width, height = im.size
            if width * height > max_pixels:
                raise BadImageError(
                    f"decompression bomb: {width}x{height} = {width * height:,} pixels is over "
                    f"the {max_pixels:,}-pixel limit"
                )
            im.load()  # Pillow decodes lazily; without this a truncated file looks fine
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImageError(f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise BadImageError("not an image Pillow can read (not an image, or wrong type)") from None
    except Exception as err:  # noqa: BLE001
        # Pillow's decoders report damaged data with whatever exception the format plugin
        # happens to raise (OSError, SyntaxError, EOFError, struct.error, IndexError, ...).
        # Every one of them means the same thing to the user: this file is broken.
        detail = f"{type(err).__name__}: {err}"
        raise BadImageError(f"truncated or corrupt image data ({detail})") from None
    return im


@contextlib.contextmanager
def _strict_loading():
    """Refuse truncated files and make Pillow's bomb warning an error, whatever the process set."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation: phone photos are stored sideways with a rotate flag."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as err:  # noqa: BLE001 - EXIF parsing fails in many format-specific ways
        # Guessing the orientation would train on sideways images without anyone noticing.
        raise BadImageError(f"unreadable EXIF orientation ({type(err).__name__}: {err})") from None


def to_rgb8(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency becomes a white background."""
    if im.mode.startswith("I") or im.mode == "F":
        im = Image.fromarray(_scale_to_uint8(im), mode="L")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        # Composite rather than drop alpha: transparent pixels often hold black or junk colour.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # covers L, 1, P, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(im: Image.Image) -> np.ndarray:
    """Map 16/32-bit or float grey to 0..255 by the image's real bit depth, never by clipping."""
    values = np.asarray(im).astype(np.float64)
    if im.mode == "F" and values.size and values.max() <= 1.0:
        top = 1.0
    else:
        top = float(2 ** _bit_depth(im, values) - 1)
    scaled = np.rint(np.clip(values, 0.0, top) * (255.0 / top))
    return scaled.astype(np.uint8)


def _bit_depth(im: Image.Image, values: np.ndarray) -> int:
    """Declared bits per sample where the file says (TIFF: 12-bit scans), else from the mode."""
    tags = getattr(im, "tag_v2", None)
    declared = tags.get(258) if tags is not None else None
    if isinstance(declared, tuple):
        declared = declared[0] if declared else None
    if isinstance(declared, int) and 1 <= declared <= 32:
        return declared
    if im.mode.startswith("I;16") or im.format == "PNG":
        return 16
    # A plain 32-bit "I" image with no header info: use the smallest depth that holds the data.
    peak = values.max() if values.size else 0
    return 8 if peak <= 255 else 16 if peak <= 65535 else 32


@dataclass(frozen=True)
class Placement:
    """Where `transform` puts an image: resized to `size` (covering `target`, both (w, h)), cut
    at (left, top) to `target`, maybe mirrored."""

    size: tuple[int, int]
    target: tuple[int, int]
    left: int
    top: int
    flipped: bool = False

    def size_ids(self, original: tuple[int, int]) -> tuple[int, ...]:
        """SDXL's micro-conditioning of the cut: original (h, w), crop corner (top, left), target
        (h, w). The corner is counted in the mirrored image when mirrored, as diffusers'
        train_text_to_image_sdxl.py does (it mirrors, then crops)."""
        left = self.size[0] - self.target[0] - self.left if self.flipped else self.left
        return original[1], original[0], self.top, left, self.target[1], self.target[0]


def place(
    image_size: tuple[int, int],
    resolution: int | tuple[int, int],
    crop: str = "center",
    flip: bool = False,
    rng: random.Random | None = None,
) -> Placement:
    """The geometry of `transform` for an image of `image_size` (w, h); draws from `rng`."""
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    if crop not in ("center", "random"):
        raise UsageError(f"crop must be 'center' or 'random', not {crop!r}")
    if rng is None and (crop == "random" or flip):
        raise ValueError("random crop or flip needs an rng (random.Random) so it can be reproduced")
    scale = max(width / image_size[0], height / image_size[1])
    size = (max(width, round(image_size[0] * scale)), max(height, round(image_size[1] * scale)))
    if crop == "random":
        left, top = rng.randint(0, size[0] - width), rng.randint(0, size[1] - height)
    else:
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return Placement(size, (width, height), left, top, bool(flip and rng.random() < 0.5))


def reload_training_image(
    path: str | os.PathLike,
    target: int | tuple[int, int],
    crop: str = "center",
    flip: bool = False,
    rng: random.Random | None = None,
    max_pixels: int = MAX_PIXELS,
) -> tuple[torch.Tensor, Placement]:
    """A training image that `scan_dataset` found usable, loaded again (`load_image`), placed for
    `target` (`place`: drawing from `rng`) and cut (`transform`): its (3, H, W) pixels and placement."""
    try:
        img = load_image(path, max_pixels)
    except BadImageError as err:
        # The file changed after scan_dataset checked it; stopping beats silently skipping.
        raise BadImageError(f"{path}: {err} (it was fine when scanned)") from None
    placement = place(img.size, target, crop, flip, rng)
    return transform(img, placement), placement


def transform(
    img: Image.Image,
    resolution: int | tuple[int, int] | Placement,
    crop: str = "center",
    flip: bool = False,
    rng: random.Random | None = None,
) -> torch.Tensor:
    """Resize to cover the target, crop to it, maybe mirror; return (3, H, W) floats in [-1, 1].

    `resolution` is a side length, a bucket's (width, height) or a `place`d geometry. All
    randomness is drawn from `rng` (crop position first, then the flip coin) so a resumed run can
    replay it exactly.
    """
    p = resolution if isinstance(resolution, Placement) else place(img.size, resolution, crop, flip, rng)
    if p.size != img.size:
        img = img.resize(p.size, Image.Resampling.LANCZOS)  # LANCZOS antialiases when shrinking
    img = img.crop((p.left, p.top, p.left + p.target[0], p.top + p.target[1]))
    if p.flipped:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())  # (H, W, 3)
    return pixels.permute(2, 0, 1).float().div(127.5).sub(1.0)  # (3, H, W)
