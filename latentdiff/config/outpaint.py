"""How far a picture's canvas may grow (outpainting): the one check of the CLI, the Python API and
the server's field, bounded by the side limit and by memory before anything is allocated."""

from __future__ import annotations

from latentdiff.config.params import MAX_SIDE, Label, fail, whole
from latentdiff.errors import UsageError
from latentdiff.runtime.memory import check_fits

# Growing the canvas holds the RGB picture and its mask (4 bytes a pixel) ~3 times (array, padded
# copy, PIL image); the generation at that size is checked by its own estimate afterwards.
OUTPAINT_BYTES_PER_PIXEL = 12


def outpaint(label: Label, value, image_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pixels to grow a picture's canvas by: four whole numbers from 0 to
    MAX_SIDE, not all 0, as a list/tuple or "L,R,T,B" text. With `image_size` (width, height), the
    grown canvas must keep to MAX_SIDE a side and fit in memory (runtime.memory.check_fits), checked
    before anything is allocated. The one check of the CLI, the Python API and the server's field."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) != 4:
        fail(label, "outpaint", 'four pixel counts [left, right, top, bottom] (or "L,R,T,B")', value)
    borders = tuple(whole(label, "outpaint", _digits(v), 0, MAX_SIDE) for v in items)
    if max(borders) == 0:
        raise UsageError(f"{label('outpaint')} grows nothing (all four are 0)")
    if image_size is not None:
        w, h = image_size[0] + borders[0] + borders[1], image_size[1] + borders[2] + borders[3]
        if max(w, h) > MAX_SIDE:
            raise UsageError(
                f"{label('outpaint')} {list(borders)} grows the {image_size[0]}x{image_size[1]} picture to "
                f"{w}x{h}; at most {MAX_SIDE} px a side"
            )
        check_fits(w * h * OUTPAINT_BYTES_PER_PIXEL, f"outpainting to {w}x{h}", "outpaint less at a time")
    return borders


def _digits(v):
    """A count given as text ("L,R,T,B") as an int; other text stays text (whole() refuses it)."""
    text = v.strip() if isinstance(v, str) else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else v
