"""Preprocessors (annotators) that need no weights: a control map computed from a picture exactly
as the A1111 ControlNet extension computes it (the same OpenCV calls on the same arrays; read for
behaviour, the code is ours). Their names and sliders are in config/control_flags.MODULES.

Every one takes the picture as 8-bit RGB (H, W, 3) and returns an 8-bit RGB map. Most first
scale the picture so that its short side is the processor resolution (cubic up, area down),
pad it with its edge pixels to multiples of 64, work on that, and cut the padding off again
(the extension's `resize_image_with_pad`); the padding changes what canny finds at the borders.

Preprocessors that run a network (depth, openpose, lineart, softedge, ...) need weights that
latentdiff does not ship: make the map with the annotator you have (the `controlnet_aux`
package with your local weights, or A1111's `/controlnet/detect`) and pass it with
`--control-module none`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from latentdiff.config.control_flags import module, resolution, thresholds
from latentdiff.errors import UsageError


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UsageError(
            "the preprocessors need OpenCV: pip install opencv-python-headless (or pass a ready map "
            "with --control-module none)"
        ) from None
    return cv2


def resize_with_pad(img: np.ndarray, res: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(`img` scaled so that its short side is `res`, edge-padded to multiples of 64; the scaled
    size (h, w), to cut the padding off the result)."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    k = float(res) / float(min(h, w))
    th, tw = int(np.round(float(h) * k)), int(np.round(float(w) * k))
    img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    padded = np.pad(img, [[0, -th % 64], [0, -tw % 64], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (th, tw)


def _rgb(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(x[:, :, None], 3, axis=2) if x.ndim == 2 else x)


def _cut(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(x[: size[0], : size[1]])


def canny(img, res, a, b, seed):
    padded, size = resize_with_pad(img, res)
    return _rgb(_cut(_cv2().Canny(padded, int(a), int(b)), size))


def invert(img, res, a, b, seed):
    return 255 - img


def none(img, res, a, b, seed):
    return img


def threshold(img, res, a, b, seed):
    padded, size = resize_with_pad(img, res)
    out = np.zeros_like(padded)
    out[padded.min(axis=2) > a] = 255
    return _cut(out, size)


def scribble_xdog(img, res, a, b, seed):
    """A difference of Gaussians (sigma 0.5 and 5) thresholded. The extension doubles 255 - DoG
    in 8 bits, so the product wraps around past 255: kept, for the same map."""
    cv2 = _cv2()
    padded, size = resize_with_pad(img, res)
    x = padded.astype(np.float32)
    dog = 255 - np.min(cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5), axis=2)
    edge = (np.uint8(255) - dog.clip(0, 255).astype(np.uint8)) * np.uint8(2)  # uint8: wraps as theirs
    out = np.zeros_like(padded)
    out[edge > a] = 255
    return _cut(out, size)


def tile_resample(img, res, a, b, seed):
    """The picture scaled down by `a` (area), unchanged below 1.1."""
    if a < 1.1:
        return img
    h, w = int(float(img.shape[0]) / float(a)), int(float(img.shape[1]) / float(a))
    cv2 = _cv2()
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def lineart_standard(img, res, a, b, seed):
    """Dark lines on a light ground: how much darker each pixel is than its blurred (sigma 6)
    neighbourhood, scaled so the median line (of values > 8, at least 16) maps to 127."""
    padded, size = resize_with_pad(img, res)
    x = padded.astype(np.float32)
    intensity = np.min(_cv2().GaussianBlur(x, (0, 0), 6.0) - x, axis=2).clip(0, 255)
    lines = intensity[intensity > 8]
    # theirs is max(16, median): an empty selection's median is nan, and max keeps 16
    intensity /= max(16, np.median(lines)) if lines.size else 16
    intensity *= 127
    return _rgb(_cut(intensity.clip(0, 255).astype(np.uint8), size))


def shuffle(img, res, a, b, seed):
    """The picture moved along a smooth random flow: two noise fields (one per axis), each
    uniform noise on a 256-pixel grid scaled up cubically and stretched to 0..1. The noise is
    numpy's legacy generator seeded as the extension seeds it for a generation with seed S and
    no subseed: (S + S) mod 2**32."""
    cv2 = _cv2()
    padded, size = resize_with_pad(img, res)
    x = _cut(padded, size)
    h, w = x.shape[:2]
    rng = np.random.RandomState((seed + seed) & 0xFFFFFFFF)
    fx, fy = _noise(rng, h, w, cv2) * float(w - 1), _noise(rng, h, w, cv2) * float(h - 1)
    flow = np.stack([fx, fy], axis=2).astype(np.float32)
    return cv2.remap(x, flow, None, cv2.INTER_LINEAR)


def _noise(rng, h: int, w: int, cv2, f: int = 256) -> np.ndarray:
    noise = rng.uniform(low=0, high=1, size=(h // f + 2, w // f + 2, 1))
    noise = cv2.resize(noise, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f : f + h, f : f + w]
    noise -= np.min(noise)
    noise /= np.max(noise)
    return noise


def blur_gaussian(img, res, a, b, seed):
    padded, size = resize_with_pad(img, res)
    return _cv2().GaussianBlur(_cut(padded, size), (0, 0), float(a))


def _recolor(img, a, code: str, channel: int):
    """One channel of an OpenCV colour conversion (the extension converts its RGB array as if it were
    BGR: kept), gamma-corrected by `a`, as grey."""
    cv2 = _cv2()
    x = cv2.cvtColor(img, getattr(cv2, code))[:, :, channel].astype(np.float32) / 255.0
    return _rgb(((x**a) * 255.0).clip(0, 255).astype(np.uint8))


def recolor_luminance(img, res, a, b, seed):
    return _recolor(img, a, "COLOR_BGR2LAB", 0)


def recolor_intensity(img, res, a, b, seed):
    return _recolor(img, a, "COLOR_BGR2HSV", 2)


FUNCTIONS = {
    f.__name__: f
    for f in (
        none,
        invert,
        canny,
        threshold,
        scribble_xdog,
        tile_resample,
        lineart_standard,
        shuffle,
        blur_gaussian,
        recolor_luminance,
        recolor_intensity,
    )
}


def preprocess(image: Image.Image, name: str, res=None, a=None, b=None, seed: int = 0) -> Image.Image:
    """The control map of `image` (PIL) by preprocessor `name` (A1111's name or label) at processor
    resolution `res`, thresholds `a`/`b` (None or -1: the extension's defaults); `seed` is the
    generation's (only shuffle draws noise)."""
    m = module(name, "the preprocessor")
    res = resolution(m, res, "the processor resolution")
    a, b = thresholds(m, a, b, "the preprocessor's")
    if m.name == "none":
        return image.convert("RGB")
    out = FUNCTIONS[m.name](np.asarray(image.convert("RGB")), res, a, b, int(seed))
    return Image.fromarray(np.ascontiguousarray(out, dtype=np.uint8), "RGB")
