"""Images sent to the server as base64 (AUTOMATIC1111's `init_images` and `mask`, our `init_image`):
decoded by the loader `generate --init-image` uses (EXIF rotation, alpha, 16-bit), and refused with
one line (400) when they are not images or are too large.

A job holds its pictures as the files that were sent (`Pictures`: a few KB for a PNG that compresses
well), decoded when checked at submit and again by the worker, never kept decoded in the queue: a
4096 px picture and mask are 64 MiB decoded, and a finished job holds none."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from PIL import Image, ImageOps

from latentdiff.errors import UsageError
from latentdiff.runtime.memory import check_fits

# Larger pictures are refused before their pixels are decoded: the work size is at most 2048 a side.
MAX_PIXELS = 4096 * 4096
# One picture file: a MAX_PIXELS 8-bit RGBA PNG that does not compress at all is 64 MiB (the body
# limit, --max-body-mb, is usually lower).
MAX_PICTURE_BYTES = 64 * 2**20
# A face-embedding .npy file (FaceID): (N, 512) float32 for N up to 8 faces is 16 KiB.
MAX_EMBEDDING_BYTES = 1 << 20
NPY_MAGIC = b"\x93NUMPY"
# Bytes per canvas pixel while an outpainted canvas is made: RGB + mask, twice (numpy pad and the image).
CANVAS_BYTES_PER_PIXEL = 8


@dataclass(frozen=True)
class ControlFile:
    """One control unit of a request: its picture's file and its checked settings (the record of
    config/control_flags.checked: the model's path inside --controlnet-dir, module, thresholds,
    processor_res, resize, weight, start, end); `what` names it in messages."""

    image: bytes
    unit: dict
    what: str = "controls[0]"

    def picture(self) -> Image.Image:
        return rgb_picture(self.image, f"{self.what}.image")

    def control(self):
        """The unit as the pipeline takes it (latentdiff.Control, its picture decoded)."""
        # Imported with the first job: workflows.control imports torch, which the server loads with its first model.
        from latentdiff.workflows.control import Control

        keys = ("weight", "start", "end", "resize", "module", "processor_res", "threshold_a", "threshold_b")
        return Control(self.picture(), self.unit["model"], **{k: self.unit[k] for k in keys})


@dataclass(frozen=True)
class PromptFile:
    """One IP-Adapter image prompt of a request: its picture's file (or, for a FaceID adapter, a
    numpy .npy file of face embeddings, read without pickle), its scale, the adapter's path inside
    --ip-adapter-dir and the image encoder folders of the h94 layout found inside that folder."""

    image: bytes
    scale: float
    adapter: str
    encoders: tuple[str, ...] = ()
    what: str = "image_prompts[0]"

    def picture(self):
        """A PIL image, or a numpy array for face embeddings (bounded; allow_pickle=False)."""
        if not self.image.startswith(NPY_MAGIC):
            return rgb_picture(self.image, f"{self.what}.image")
        import io

        # Imported with the first face embedding: numpy is not loaded by the server before its first model.
        import numpy as np

        if len(self.image) > MAX_EMBEDDING_BYTES:
            raise UsageError(
                f"{self.what}.image: a face-embedding .npy file may have at most {MAX_EMBEDDING_BYTES:,} bytes"
            )
        try:
            return np.load(io.BytesIO(self.image), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UsageError(f"{self.what}.image is not a usable numpy .npy file: {str(e).splitlines()[0]}") from None

    def prompt(self):
        """The prompt as the pipeline takes it (latentdiff.ImagePrompt, its picture decoded)."""
        # Imported with the first job: workflows.image_prompt imports torch, which the server loads with its first model.
        from latentdiff.workflows.image_prompt import ImagePrompt

        return ImagePrompt(self.picture(), self.scale, self.adapter)


@dataclass(frozen=True)
class Pictures:
    """The picture files of a request (base64 decoded, pixels not): what a queued job holds."""

    init_image: bytes | None = None
    mask: bytes | None = None
    invert_mask: bool = False
    controls: tuple[ControlFile, ...] = ()
    prompts: tuple[PromptFile, ...] = ()

    def __bool__(self) -> bool:
        return self.init_image is not None or self.mask is not None or bool(self.controls or self.prompts)

    def decode(self, controls: bool = False) -> dict:
        """Pipeline keyword arguments (`image`, `mask`: PIL) of the pictures; with `controls`, the
        control units and image prompts too (`controls`: latentdiff.Control with decoded pictures,
        `image_prompts`: latentdiff.ImagePrompt with `image_encoder`, the encoder folders found)."""
        out = {}
        if self.init_image is not None:
            out["image"] = rgb_picture(self.init_image, "init image")
        if self.mask is not None:
            out["mask"] = mask_from(open_picture(self.mask, "mask"), self.invert_mask)
        if controls and self.controls:
            out["controls"] = [c.control() for c in self.controls]
        if controls and self.prompts:
            out["image_prompts"] = [p.prompt() for p in self.prompts]
            out["image_encoder"] = list(dict.fromkeys(e for p in self.prompts for e in p.encoders))
        return out

    def check_controls(self) -> None:
        """Decode each control picture and image prompt once (one at a time), so that a bad one is a
        400 at submit."""
        for c in (*self.controls, *self.prompts):
            c.picture()


def picture_bytes(text, what: str) -> bytes:
    """The file of a base64 picture (a data: URL is fine), bounded before it is decoded."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{what}: expected a base64 image, got {'nothing' if not text else type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > MAX_PICTURE_BYTES:
        raise UsageError(
            f"{what} is {len(text):,} characters of base64, over the {MAX_PICTURE_BYTES // 2**20} MiB "
            f"a picture file may have ({MAX_PIXELS:,} pixels as PNG fit in it)"
        )
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what} is not base64 image data") from None


def open_picture(data: bytes, what: str) -> Image.Image:
    """A picture file in its own mode; more than MAX_PIXELS is refused from its header."""
    # Imported with the first picture: images.read imports torch (through its tensor helpers), which the server loads with its first model.
    from latentdiff.images.read import BadImageError, open_image_data

    try:
        return open_image_data(data, MAX_PIXELS)
    except BadImageError as e:
        raise UsageError(f"{what} is not usable: {e}") from None


def rgb_picture(data: bytes, what: str) -> Image.Image:
    """A picture file as 8-bit RGB (the loader's rules: EXIF rotation, alpha on white, 16-bit)."""
    # Imported with the first picture: images.read imports torch (through its tensor helpers), which the server loads with its first model.
    from latentdiff.images.read import to_rgb8

    return to_rgb8(open_picture(data, what))


def check_canvas(size: tuple[int, int], outpaint) -> None:
    """The canvas outpaint grows a `size` picture to must stay within MAX_PIXELS (the limit on a
    picture sent) and fit in the memory free now, checked before anything is allocated."""
    left, right, top, bottom = outpaint
    width, height = size[0] + left + right, size[1] + top + bottom
    if width * height > MAX_PIXELS:
        raise UsageError(
            f"outpaint {list(outpaint)} grows the {size[0]}x{size[1]} picture to {width}x{height} = "
            f"{width * height:,} pixels, over the {MAX_PIXELS:,}-pixel limit on a picture; outpaint less"
        )
    check_fits(width * height * CANVAS_BYTES_PER_PIXEL, f"the {width}x{height} outpainted canvas", "outpaint less")


def mask_from(im: Image.Image, invert: bool = False) -> Image.Image:
    """The repaint mask (L, white repaints). A mask with transparency is read from its alpha
    (painted = opaque), as AUTOMATIC1111 reads masks drawn on a transparent layer."""
    # Imported with the first picture: images.read imports torch (through its tensor helpers), which the server loads with its first model.
    from latentdiff.images.read import to_rgb8

    alpha = im.convert("RGBA").getchannel("A") if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else None
    mask = alpha if alpha is not None and alpha.getextrema()[0] < 255 else to_rgb8(im).convert("L")
    return ImageOps.invert(mask) if invert else mask


def pictures(init_image=None, mask=None, invert_mask: bool = False, controls=(), prompts=()) -> Pictures:
    """The base64 pictures of a request as files (checked as base64 and bounded; decoded at submit);
    `controls` the request's ControlFiles, `prompts` its PromptFiles."""
    return Pictures(
        None if init_image is None else picture_bytes(init_image, "init image"),
        None if mask is None else picture_bytes(mask, "mask"),
        bool(invert_mask),
        tuple(controls),
        tuple(prompts),
    )
