"""The hires fix's pixel upscalers as A1111 1.10 runs them (its modules/upscaler.py, upscaler_utils.py and
images.py resize_image, split_grid, combine_grid, read for behaviour; our code):
- "None": the first pass's picture resized to the target with Lanczos;
- "Lanczos", "Nearest" and a model file (ESRGAN-type, through spandrel: formats/sr_model.py): A1111's
  Upscaler.upscale by the factor max(target / size): up to three of the upscaler's own steps until the
  picture covers int(size * factor) // 8 * 8 (PIL's resize by the factor; the model's fixed scale), a
  Lanczos resize to that, then a Lanczos resize to the target;
- a model runs on tiles of 192 px overlapping by 8 (A1111's ESRGAN_tile and _overlap defaults), each fed
  as A1111 feeds it (BGR in [0, 1], the output clamped and rounded), the rows joined with linear ramps
  over the overlap (PIL's paste through a mask), then the rows so.
The first pass's pixels reach the upscaler as A1111 makes them: 255 * (x + 1) / 2 truncated to uint8.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from latentdiff.config.upscalers import PIXEL_UPSCALERS
from latentdiff.formats.sr_model import is_sr_file, load_sr_model

LANCZOS, NEAREST = Image.Resampling.LANCZOS, Image.Resampling.NEAREST
PIL_STEPS = {"lanczos": LANCZOS, "nearest": NEAREST}
TILE, OVERLAP = 192, 8  # A1111's ESRGAN_tile, ESRGAN_tile_overlap


def to_uint8(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> pictures as A1111's hires fix makes them (truncated, not rounded)."""
    a = ((pixels.float() + 1) / 2).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray((255.0 * x).astype(np.uint8)) for x in a]


def resize(pipe, image: Image.Image, size: tuple[int, int], upscaler: str) -> Image.Image:
    """A1111's resize_image(0, image, *size, upscaler): `upscaler` none, lanczos, nearest or a model file."""
    if upscaler == "none":
        return image.resize(size, LANCZOS)
    factor = max(size[0] / image.width, size[1] / image.height)
    if factor > 1.0:
        image = _upscale(image, factor, _step(pipe, upscaler, factor))
    return image if image.size == size else image.resize(size, LANCZOS)


def _step(pipe, upscaler: str, factor: float):
    """One of the upscaler's own steps (A1111's do_upscale)."""
    if upscaler in PIL_STEPS:
        return lambda im: im.resize((int(im.width * factor), int(im.height * factor)), PIL_STEPS[upscaler])
    model = sr_model(pipe, upscaler)
    return lambda im: upscale_tiled(model, im, TILE, OVERLAP)


def _upscale(image: Image.Image, factor: float, step) -> Image.Image:
    """A1111's Upscaler.upscale: steps until the picture covers the destination (at most three, stopping
    when one changes nothing), then a Lanczos resize to it."""
    dest = (int(image.width * factor // 8 * 8), int(image.height * factor // 8 * 8))
    for i in range(3):
        if image.width >= dest[0] and image.height >= dest[1] and (i > 0 or factor != 1):
            break
        before = image.size
        image = step(image)
        if image.size == before:
            break
    return image if image.size == dest else image.resize(dest, LANCZOS)


def sr_model(pipe, path: str):
    """The model file's spandrel descriptor, loaded once per pipeline (pipe.upscalers)."""
    key = ("sr", str(path))
    if key not in pipe.upscalers:
        pipe.upscalers[key] = load_sr_model(path, pipe.allow_pickle, pipe.device)
    return pipe.upscalers[key]


@torch.no_grad()
def upscale_patch(model, image: Image.Image) -> Image.Image:
    """One piece through the model as A1111 feeds it: BGR in [0, 1] in, clamped, rounded RGB out."""
    a = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1)) / 255
    param = next(model.model.parameters())
    out = model(torch.from_numpy(a)[None].to(param.device, param.dtype))[0].float().cpu().clamp(0, 1).numpy()
    return Image.fromarray((255.0 * out.transpose(1, 2, 0)).round().astype(np.uint8)[:, :, ::-1], "RGB")


def upscale_tiled(model, image: Image.Image, tile: int, overlap: int) -> Image.Image:
    """A1111's upscale_with_model: the picture in a grid of tiles (split_grid), each upscaled, joined."""
    if tile <= 0:
        return upscale_patch(model, image)
    rows = []
    for y, h, row in split_grid(image, tile, overlap):
        done = [(x, w, upscale_patch(model, piece)) for x, w, piece in row]
        s = done[0][2].width // row[0][2].width
        rows.append((y * s, h * s, [(x * s, w * s, out) for x, w, out in done]))
    return combine_grid(rows, (image.width * s, image.height * s), overlap * s)


def split_grid(image: Image.Image, tile: int, overlap: int) -> list:
    """[(y, h, [(x, w, piece), ...]), ...]: tiles spread evenly, the last flush with the far edge."""
    w, h = image.size
    cols, rows = math.ceil((w - overlap) / (tile - overlap)), math.ceil((h - overlap) / (tile - overlap))
    dx = (w - tile) / (cols - 1) if cols > 1 else 0
    dy = (h - tile) / (rows - 1) if rows > 1 else 0
    grid = []
    for r in range(rows):
        y = int(r * dy) if int(r * dy) + tile < h else h - tile
        row = []
        for c in range(cols):
            x = int(c * dx) if int(c * dx) + tile < w else w - tile
            row.append((x, tile, image.crop((x, y, x + tile, y + tile))))
        grid.append((y, tile, row))
    return grid


def _ramp(overlap: int, across: int, vertical: bool) -> Image.Image:
    """The join's mask: 0 .. 255 * (overlap - 1) / overlap along the overlap, uint8 truncated."""
    r = (np.arange(overlap, dtype=np.float32) * 255 / overlap).astype(np.uint8)
    a = np.repeat(r[:, None], across, axis=1) if vertical else np.repeat(r[None, :], across, axis=0)
    return Image.fromarray(a, "L")


def combine_grid(rows: list, size: tuple[int, int], overlap: int) -> Image.Image:
    """A1111's combine_grid: each tile pasted over its left neighbour through a ramp, then each row so."""
    out = Image.new("RGB", size)
    for y, h, row in rows:
        line = Image.new("RGB", (size[0], h))
        for x, w, piece in row:
            if x == 0:
                line.paste(piece, (0, 0))
                continue
            line.paste(piece.crop((0, 0, overlap, h)), (x, 0), mask=_ramp(overlap, h, False))
            line.paste(piece.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0:
            out.paste(line, (0, 0))
            continue
        out.paste(line.crop((0, 0, size[0], overlap)), (0, y), mask=_ramp(overlap, size[0], True))
        out.paste(line.crop((0, overlap, size[0], h)), (0, y + overlap))
    return out


def is_pixel_upscaler(name) -> bool:
    """Whether the hires fix's `name` is one of these (not a latent mode or a diffusion upscaler)."""
    return name in PIXEL_UPSCALERS or is_sr_file(name)
