"""The images latentdiff makes: decoded tensors to PIL, PNGs written with their parameters (never
over an existing file) and those parameters read back (`--from`), file-name slugs, contact grids.

Images a user gives latentdiff (training images, init images) are read by image_input.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from latentdiff.errors import UsageError
from latentdiff.images.comfy_graph import params_from_comfy
from latentdiff.images.exif_text import exif_comment, kind_of
from latentdiff.images.infotext import format_infotext, params_from_a1111
from latentdiff.images.png_text import png_text
from latentdiff.runtime.files import write_new
from latentdiff.runtime.reading import open_regular, parse_json

META_KEY = "latentdiff"  # JSON with every parameter; "parameters" holds an A1111-style line


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, rounded exactly as diffusers does."""
    arr = (images.float() / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in (arr * 255).round().astype(np.uint8)]


def a1111_line(p: dict) -> str:
    """A human-readable summary in the format other tools (A1111, civitai) show."""
    return format_infotext(p)


def save_png(image: Image.Image, out_dir: Path, stem: str) -> Path:
    """Write `image` with its parameters; never overwrite (the next free numbered name is taken),
    never leave a partial file (see outfiles.write_new)."""
    info = PngImagePlugin.PngInfo()
    params = image.info.get(META_KEY)
    if params:
        info.add_itxt(META_KEY, json.dumps(params, sort_keys=True))
        info.add_itxt("parameters", a1111_line(params))
    return write_new(Path(out_dir), stem, ".png", lambda f: image.save(f, format="PNG", pnginfo=info))


def read_params(path: str | os.PathLike) -> dict:
    """The parameters a latentdiff PNG was made with (or those a ComfyUI PNG or an AUTOMATIC1111 PNG,
    JPEG or WebP records), read from its text chunks or EXIF alone: the pixels are not decoded, each text
    is at most 1 MiB (images/png_text.py, images/exif_text.py) and its JSON nests at most MAX_DEPTH deep.
    A ComfyUI PNG's API graph ("prompt", images/comfy_graph.py) comes before an A1111 line some of its
    savers add."""
    what = "--from image"
    texts = _texts(path, what)
    text, foreign, graph = texts.get(META_KEY), texts.get("parameters"), texts.get("prompt")
    if not text and graph:
        where = f"{what} {path}"
        return params_from_comfy(parse_json(graph, f"{where}: its ComfyUI graph"), f"{where} (a ComfyUI graph)")
    if not text and not foreign and texts.get("workflow"):
        raise UsageError(
            f"{what} {path} holds ComfyUI's UI workflow but not its API graph (the 'prompt' text that "
            "ComfyUI's SaveImage writes); latentdiff reads the API graph"
        )
    if not text and foreign:
        params, notes = params_from_a1111(foreign, f"{path}")
        return {**params, "notes": notes}
    if not text:
        raise UsageError(f"{what} {path} has no latentdiff parameters (nor AUTOMATIC1111's)")
    params = parse_json(text, f"{what} {path}: its latentdiff metadata")
    if not isinstance(params, dict) or "prompt" not in params:
        raise UsageError(f"{what} {path} has no prompt in its parameters")
    return params


def _texts(path, what: str) -> dict[str, str]:
    """{"latentdiff": JSON, "parameters": A1111's line, "prompt"/"workflow": ComfyUI's graphs}, as far
    as the file holds them."""
    with os.fdopen(open_regular(path, what), "rb") as f:
        kind = kind_of(f.read(12))
    if kind is None:
        raise UsageError(f"{what} {path} cannot be read: it is not a PNG, JPEG or WebP file")
    if kind == "png":
        return png_text(path, (META_KEY, "parameters", "prompt", "workflow"), what)
    comment = exif_comment(path, what)
    return {} if comment is None else {"parameters": comment}


def slug(text: str, limit: int = 40) -> str:
    s = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in s:
        s = s.replace("--", "-")
    return s[:limit].strip("-") or "image"


def grid(images: list[Image.Image], cols: int, labels: list[str] | None = None) -> Image.Image:
    """Tile images in rows of `cols` (all the size of the first), optionally captioned."""
    from PIL import ImageDraw

    w, h = images[0].size
    label_h = 12 if labels else 0
    rows = -(-len(images) // cols)
    sheet = Image.new("RGB", (cols * w, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x, y = (i % cols) * w, (i // cols) * (h + label_h)
        sheet.paste(im.resize((w, h)), (x, y))
        if labels:
            draw.text((x + 2, y + h), labels[i][: max(4, w // 6)], fill="black")
    return sheet
