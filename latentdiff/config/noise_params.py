"""The A1111 noise options of a call (rng, variation seed and strength, seed resize, ENSD), checked:
any of them selects A1111's own sampling path (sampling/a1111.py); none keeps diffusers'."""

from __future__ import annotations

import re

from latentdiff.config.flags import Flag
from latentdiff.config.params import MAX_SEED, MAX_SIDE, Label, fail, real, seed, whole
from latentdiff.sampling.noise_request import RNG_SOURCES, NoiseRequest
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS
from latentdiff.sampling.unipc_settings import on_off

# ... and A1111's UniPC settings (sampling/unipc_settings.py), which run on A1111's path only, so select it too
NAMES = ("rng", "variation_seed", "variation_strength", "seed_resize_from", "ensd", *UNIPC_SETTINGS)
_GROUP = "A1111's noise and sampling path (any of these selects it)"
# generate's flags for `noise` (GenerateConfig), each named by its NAMES entry
NOISE_FLAGS = (
    Flag(
        "--rng",
        "A1111's noise source: cpu (torch's CPU generator), gpu (torch's on CUDA), nv (CUDA's numbers on any "
        "device: A1111's NV setting, and what its default GPU gives) (default with the others: cpu)",
        dict(choices=RNG_SOURCES),
        _GROUP,
    ),
    Flag(
        "--variation-seed", "A1111's variation seed (subseed); image k uses N + k", dict(type=int, metavar="N"), _GROUP
    ),
    Flag(
        "--variation-strength",
        "0..1: slerp from the seed's noise to the variation seed's",
        dict(type=float, metavar="S"),
        _GROUP,
    ),
    Flag(
        "--seed-resize-from", "draw the noise at this size and paste it centred (A1111's)", dict(metavar="WxH"), _GROUP
    ),
    Flag(
        "--ensd", "A1111's eta noise seed delta: the sampler's noise from seed + N", dict(type=int, metavar="N"), _GROUP
    ),
    Flag(
        "--uni-pc-variant",
        "A1111's UniPC variant (default: bh1)",
        dict(choices=UNIPC_SETTINGS["uni_pc_variant"][2]),
        _GROUP,
    ),
    Flag(
        "--uni-pc-skip-type",
        "A1111's UniPC skip type (default: time_uniform)",
        dict(choices=UNIPC_SETTINGS["uni_pc_skip_type"][2]),
        _GROUP,
    ),
    Flag(
        "--uni-pc-order",
        "A1111's UniPC order, 1..50, at most the steps (default: 3)",
        dict(type=int, metavar="N"),
        _GROUP,
    ),
    Flag(
        "--uni-pc-lower-order-final",
        "true/false: A1111's UniPC lowers its order in the last steps (default: true)",
        dict(type=on_off, metavar="true|false"),
        _GROUP,
    ),
)
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")


def resize_from(label: Label, value) -> tuple[int, int] | None:
    """(width, height) pixels from a pair or "WxH"; None, or a side <= 0 (A1111's -1): off."""
    if value is None:
        return None
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m is None:
            fail(label, "seed_resize_from", "WIDTHxHEIGHT in pixels, e.g. 512x768", value)
        value = (int(m.group(1)), int(m.group(2)))
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(label, "seed_resize_from", "a (width, height) pair or WIDTHxHEIGHT", value)
    w, h = (whole(label, "seed_resize_from", v, -1, MAX_SIDE) for v in value)
    if w <= 0 or h <= 0:  # A1111: either side <= 0 turns it off
        return None
    if w < 8 or h < 8:
        fail(label, "seed_resize_from", "at least 8x8 pixels (or 0x0: off)", f"{w}x{h}")
    return (w, h)


def noise_request(label: Label, values: dict, count: int = 1) -> NoiseRequest | None:
    """The checked NoiseRequest of `values` (NAMES -> value or None); None when none is given.
    Without an rng, the CPU generator (whose first numbers are diffusers' noise for the seed)."""
    given = {k: v for k, v in values.items() if k in NAMES and v is not None}
    if not given:
        return None
    rng = given.get("rng", "cpu")
    if not isinstance(rng, str) or rng.strip().lower() not in RNG_SOURCES:
        fail(label, "rng", f"one of: {', '.join(RNG_SOURCES)}", rng)
    rng = rng.strip().lower()
    variation = given.get("variation_seed")
    return NoiseRequest(
        rng=rng,
        variation_seed=None if variation is None else seed(lambda _: label("variation_seed"), variation, count),
        variation_strength=real(label, "variation_strength", given.get("variation_strength", 0.0), 0.0, 1.0),
        resize_from=resize_from(label, given.get("seed_resize_from")),
        ensd=whole(label, "ensd", given.get("ensd", 0), 0, MAX_SEED),
    )
