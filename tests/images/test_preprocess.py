"""The preprocessors against oracles ported from the A1111 ControlNet extension's source
(github.com/Mikubill/sd-webui-controlnet, read at 56cec5b2): scripts/utils.py resize_image_with_pad,
scripts/preprocessor/model_free_preprocessors.py (canny, invert, scribble_xdog, shuffle, blur_gaussian),
scripts/preprocessor/legacy/processor.py (threshold, tile_resample, lineart_standard, recolor_*) and
annotator/shuffle + annotator/util.py make_noise_disk. Every number below is theirs: the padding to
multiples of 64, cubic up / area down, canny 100/200, xdog sigmas 0.5 and 5 and threshold 32,
lineart sigma 6 / median of values > 8 / floor 16 / 127, shuffle's 256-pixel noise grid and its
numpy seed (seed + subseed) & 0xFFFFFFFF with subseed = seed."""

import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.images.preprocess import preprocess


def pictures():
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)  # odd sizes: the padding matters
    yy, xx = np.mgrid[0:120, 0:90]
    shapes = np.full((120, 90, 3), 235, np.uint8)
    shapes[(yy - 60) ** 2 + (xx - 45) ** 2 < 900] = (20, 40, 200)
    shapes[10:30, 5:80] = (0, 0, 0)
    shapes[:, :, 1] = np.clip(shapes[:, :, 1].astype(int) + xx, 0, 255)
    big = cv2.resize(noise, (700, 600), interpolation=cv2.INTER_NEAREST)  # area down to 512
    return {"noise": noise, "shapes": shapes, "big": big}


PICTURES = pictures()


# ---- the oracle, from their source --------------------------------------------------------
def o_pad(img, res):
    """resize_image_with_pad: short side to res (cubic if k > 1 else area), edge-pad to 64."""
    H, W, _ = img.shape
    k = float(res) / float(min(H, W))
    Ht, Wt = int(np.round(float(H) * k)), int(np.round(float(W) * k))
    img = cv2.resize(img, (Wt, Ht), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
    pad = lambda x: int(np.ceil(float(x) / 64.0) * 64 - x)  # noqa: E731 (their pad64)
    padded = np.pad(img, [[0, pad(Ht)], [0, pad(Wt)], [0, 0]], mode="edge")
    return padded, lambda x: x[:Ht, :Wt]


def hwc3(x):
    return np.concatenate([x[:, :, None]] * 3, axis=2) if x.ndim == 2 else x


def o_canny(img, res=512, a=100, b=200):
    img, cut = o_pad(img, res)
    return cut(cv2.cvtColor(cv2.Canny(img, int(a), int(b)), cv2.COLOR_GRAY2RGB))


def o_xdog(img, res=512, a=32):
    img, cut = o_pad(img, res)
    g1 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
    g2 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    result = np.zeros_like(img, dtype=np.uint8)
    result[2 * (255 - dog) > a] = 255
    return cut(result)


def o_threshold(img, res=512, a=127):
    img, cut = o_pad(img, res)
    result = np.zeros_like(img, dtype=np.uint8)
    result[np.min(img, axis=2) > a] = 255
    return cut(result)


def o_tile(img, a=1.0):
    if a < 1.1:
        return img
    H, W = int(float(img.shape[0]) / float(a)), int(float(img.shape[1]) / float(a))
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)


def o_lineart(img, res=512):
    img, cut = o_pad(img, res)
    x = img.astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    with warnings.catch_warnings():  # the median of nothing (a blank picture) warns, and is nan
        warnings.simplefilter("ignore")
        intensity /= max(16, np.median(intensity[intensity > 8]))
    intensity *= 127
    return hwc3(cut(intensity.clip(0, 255).astype(np.uint8)))


def o_noise_disk(H, W, C, F):
    noise = np.random.uniform(low=0, high=1, size=((H // F) + 2, (W // F) + 2, C))
    noise = cv2.resize(noise, (W + 2 * F, H + 2 * F), interpolation=cv2.INTER_CUBIC)
    noise = noise[F : F + H, F : F + W]
    noise -= np.min(noise)
    noise /= np.max(noise)
    return noise[:, :, None] if C == 1 else noise


def o_shuffle(img, seed, res=512):
    np.random.seed((max(seed, 0) + max(seed, 0)) & 0xFFFFFFFF)  # set_numpy_seed, subseed -1 -> the seed
    img, cut = o_pad(img, res)
    img = cut(img)
    H, W, _ = img.shape
    x = o_noise_disk(H, W, 1, 256) * float(W - 1)
    y = o_noise_disk(H, W, 1, 256) * float(H - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


def o_blur(img, res=512, a=9.0):
    img, cut = o_pad(img, res)
    return cv2.GaussianBlur(cut(img), (0, 0), float(a))


def o_recolor(img, code, channel, a=1.0):
    r = cv2.cvtColor(hwc3(img), code)[:, :, channel].astype(np.float32) / 255.0
    r = ((r**a) * 255.0).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(r, cv2.COLOR_GRAY2RGB)


CASES = [
    ("canny", {}, lambda i: o_canny(i)),
    ("canny", {"a": 20, "b": 60, "res": 256}, lambda i: o_canny(i, 256, 20, 60)),
    ("invert", {}, lambda i: 255 - i),
    ("none", {}, lambda i: i),
    ("threshold", {}, lambda i: o_threshold(i)),
    ("threshold", {"a": 60, "res": 128}, lambda i: o_threshold(i, 128, 60)),
    ("scribble_xdog", {}, lambda i: o_xdog(i)),
    ("scribble_xdog", {"a": 5}, lambda i: o_xdog(i, 512, 5)),
    ("tile_resample", {}, lambda i: o_tile(i)),
    ("tile_resample", {"a": 2.5}, lambda i: o_tile(i, 2.5)),
    ("lineart_standard", {}, lambda i: o_lineart(i)),
    ("lineart_standard", {"res": 320}, lambda i: o_lineart(i, 320)),
    ("shuffle", {"seed": 3}, lambda i: o_shuffle(i, 3)),
    ("shuffle", {"seed": 2**31 + 7}, lambda i: o_shuffle(i, 2**31 + 7)),
    ("blur_gaussian", {"a": 2.0}, lambda i: o_blur(i, 512, 2.0)),
    ("recolor_luminance", {"a": 0.7}, lambda i: o_recolor(i, cv2.COLOR_BGR2LAB, 0, 0.7)),
    ("recolor_intensity", {}, lambda i: o_recolor(i, cv2.COLOR_BGR2HSV, 2)),
]


@pytest.mark.parametrize("picture", sorted(PICTURES))
@pytest.mark.parametrize("name,kw,oracle", CASES, ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_each_preprocessor_equals_the_extensions_formula(picture, name, kw, oracle):
    img = PICTURES[picture]
    ours = np.asarray(preprocess(Image.fromarray(img), name, **kw))
    theirs = oracle(img.copy())
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    assert np.array_equal(ours, theirs)


def test_the_oracle_is_sensitive_to_what_it_copies():
    """The details kept (padding to 64, the 8-bit wrap in xdog, the seed) change the maps."""
    img = PICTURES["noise"]
    unpadded = cv2.Canny(cv2.resize(img, (690, 512), interpolation=cv2.INTER_CUBIC), 100, 200)
    assert not np.array_equal(np.asarray(preprocess(Image.fromarray(img), "canny"))[:, :, 0], unpadded)
    dots = np.full((64, 64, 3), 255, np.uint8)
    dots[4::9, 4::9] = 0  # small dark dots: 2 * (255 - DoG) passes 255 around them
    padded, cut = o_pad(dots, 512)
    x = padded.astype(np.float32)
    dog = (255 - np.min(cv2.GaussianBlur(x, (0, 0), 5.0) - cv2.GaussianBlur(x, (0, 0), 0.5), axis=2)).clip(0, 255)
    no_wrap = cut(np.where(2 * (255 - dog.astype(int)) > 32, 255, 0).astype(np.uint8))
    assert not np.array_equal(np.asarray(preprocess(Image.fromarray(dots), "scribble_xdog"))[:, :, 0], no_wrap)
    one, two = (np.asarray(preprocess(Image.fromarray(img), "shuffle", seed=s)) for s in (1, 2))
    assert not np.array_equal(one, two)


def test_a_blank_picture_has_no_lines():
    white = Image.new("RGB", (80, 64), "white")  # no value > 8: the extension divides by 16
    assert np.asarray(preprocess(white, "lineart_standard")).max() == 0
    assert np.asarray(preprocess(white, "canny")).max() == 0
    assert preprocess(white, "canny").size == (640, 512)  # short side at the processor resolution


def test_canny_maps_are_black_and_white_and_grey():
    out = np.asarray(preprocess(Image.fromarray(PICTURES["shapes"]), "canny"))
    assert set(np.unique(out)) == {0, 255}
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()


@pytest.mark.parametrize(
    "name,kw,message",
    [
        ("depth_midas", {}, "runs a network whose weights latentdiff does not ship"),
        ("openpose_full", {}, "--control-module none"),
        ("sobel", {}, "must be one of none, invert, canny"),
        ("canny", {"a": 0}, "threshold A of canny (Low Threshold) must be 1..255"),
        ("canny", {"b": 256}, "threshold B of canny (High Threshold) must be 1..255"),
        ("canny", {"res": 32}, "must be a whole number of pixels from 64 to 2048"),
        ("tile_resample", {"a": 9}, "Down Sampling Rate) must be 1..8"),
    ],
)
def test_bad_preprocessor_settings_are_one_line(name, kw, message):
    with pytest.raises(UsageError, match=None) as e:
        preprocess(Image.new("RGB", (64, 64)), name, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a1111_labels_and_defaults_are_accepted():
    img = Image.fromarray(PICTURES["shapes"])
    by_label = preprocess(img, "lineart_standard (from white bg & black line)")
    assert np.array_equal(np.asarray(by_label), np.asarray(preprocess(img, "lineart_standard")))
    default = preprocess(img, "canny", res=-1, a=-1, b=-1)  # the extension's "use the default"
    assert np.array_equal(np.asarray(default), o_canny(PICTURES["shapes"]))
