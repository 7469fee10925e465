""" "Only masked" inpainting on A1111's own path (workflows/a1111_masked.py) against A1111 1.10's
img2img with inpaint_full_res rebuilt here as its code is written (processing.py, masking.py,
images.resize_image): the crop region of the blurred mask plus padding, expanded to the run's aspect
ratio (moved back inside at the edge), the picture and the blurred mask cut there and resized "and
fill" to the run's size, sampled (Euler a, blended), resized back "crop and resize", pasted and laid
under the source with the blurred (not doubled) mask. Tiny random SD1 model, pixels within 1/255."""

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.images.a1111_read import params_from_a1111
from latentdiff.workflows.a1111_masked import expand_region
from tests.sampling.test_a1111_inpaint import BLUR, IMAGE, STRENGTH, euler_a_inpainted, init_latents
from tests.sampling.test_a1111_path import CFG, NEGATIVE, PROMPT, SIZE, STEPS, close

cv2 = pytest.importorskip("cv2")
PADDING = 4
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (8, 40, 40, 52))  # wide and low: the region grows in height, past the bottom edge


def a1111_expand(crop_region, processing_width, processing_height, image_width, image_height):
    """A1111's masking.expand_crop_region, line for line."""
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop_region > ratio_processing:
        desired_height_diff = int((x2 - x1) / ratio_processing - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        if y2 >= image_height:
            y2 = image_height
    else:
        desired_width_diff = int((y2 - y1) * ratio_processing - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        if x2 >= image_width:
            x2 = image_width
    return x1, y1, x2, y2


def test_the_region_grows_to_the_aspect_ratio_as_a1111():
    rng = np.random.default_rng(1)
    for _ in range(300):
        iw, ih = (int(v) for v in rng.integers(16, 200, 2))
        x1, x2 = sorted(int(v) for v in rng.choice(iw + 1, 2, replace=False))
        y1, y2 = sorted(int(v) for v in rng.choice(ih + 1, 2, replace=False))
        w, h = (int(v) * 8 for v in rng.integers(4, 40, 2))
        box = (x1, y1, x2, y2)
        assert expand_region(box, w, h, (iw, ih)) == a1111_expand(box, w, h, iw, ih), (box, w, h, iw, ih)


def resize_image(mode, im, width, height):
    """A1111's images.resize_image, modes 1 and 2, with no img2img upscaler (Lanczos)."""
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = im.resize((src_w, src_h), resample=Image.Resampling.LANCZOS)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    assert mode == 1 or ratio == src_ratio  # the fill of mode 2's gaps is not reached here
    return res


def a1111_only_masked(pipe, seed):
    """A1111's img2img with inpaint_full_res: the final picture (uint8)."""
    m = np.array(MASK.point(lambda x: 255 if x > 128 else 0))
    k = 2 * int(2.5 * BLUR + 0.5) + 1
    image_mask = Image.fromarray(cv2.GaussianBlur(cv2.GaussianBlur(m, (k, 1), BLUR), (1, k), BLUR))
    mask_for_overlay = image_mask
    x1, y1, x2, y2 = image_mask.getbbox()
    region = (max(x1 - PADDING, 0), max(y1 - PADDING, 0), min(x2 + PADDING, SIZE), min(y2 + PADDING, SIZE))
    x1, y1, x2, y2 = region = a1111_expand(region, SIZE, SIZE, SIZE, SIZE)
    assert region[3] == SIZE and region[2] - region[0] < SIZE  # moved up from the bottom edge, cut
    image_mask = resize_image(2, image_mask.crop(region), SIZE, SIZE)
    image = resize_image(2, IMAGE.crop(region), SIZE, SIZE)
    z0 = init_latents(pipe, image)
    small = image_mask.convert("RGB").resize((z0.shape[3], z0.shape[2]))
    nmask = torch.from_numpy(np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255))[None, None]
    result = Image.fromarray(euler_a_inpainted(pipe, z0, nmask, seed))
    overlay = Image.new("RGBa", IMAGE.size)  # apply_overlay with uncrop
    overlay.paste(IMAGE.convert("RGBA").convert("RGBa"), mask=Image.eval(mask_for_overlay, lambda v: 255 - v))
    base = Image.new("RGBA", IMAGE.size)
    base.paste(resize_image(1, result, x2 - x1, y2 - y1), (x1, y1))
    base.alpha_composite(overlay.convert("RGBA"))
    return np.asarray(base.convert("RGB"))


def test_only_masked_matches_a1111(pipe_sd1):
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=7,
                   scheduler="euler_a", prompt_syntax="plain", rng="cpu", image=IMAGE, mask=MASK, mask_blur=BLUR,
                   strength=STRENGTH, inpaint_area="masked", padding=PADDING)[0]  # fmt: skip
    assert close(np.asarray(got), a1111_only_masked(pipe_sd1, 7))
    assert np.array_equal(np.asarray(got)[:8], np.asarray(IMAGE)[:8])  # outside the region: the source
    read = params_from_a1111(got.info["parameters"])[0]  # A1111's infotext, read back to the same
    assert (read["inpaint_area"], read["padding"]) == ("masked", PADDING)


def test_a1111s_names_for_the_inpaint_area_flags():
    import argparse

    from latentdiff.config.image_flags import IMAGE_FLAGS
    from latentdiff.workflows.options import ImageOptions

    parser = argparse.ArgumentParser()
    for f in IMAGE_FLAGS:
        parser.add_argument(f.name, *f.aliases, **f.options)
    ns = parser.parse_args(["--inpaint-area", "whole", "--only-masked-padding", "12"])
    assert (ImageOptions(inpaint_area=ns.inpaint_area).inpaint_area, ns.padding) == ("full", 12)
    assert parser.parse_args(["--inpaint-area", "masked", "--padding", "3"]).padding == 3
