"""The hires fix by a pixel upscaler on A1111's own path (workflows/a1111_upscale.py) against A1111 1.10's
sample_hr_pass rebuilt here as its code is written (processing.py, images.resize_image, upscaler.py,
upscaler_utils.upscale_with_model, images.split_grid / combine_grid): the first pass decoded and truncated
to uint8, resized by "Nearest" or an ESRGAN model file (a tiny random one built with spandrel's
own ESRGAN class, fed BGR on 192 px tiles overlapping by 8), encoded, and the second pass run from it as
from the "Latent" upscale (tests/sampling/test_a1111_img2img.py). Tiny random SD1 model, pixels within
1/255."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.images.a1111_read import params_from_a1111
from latentdiff.workflows.a1111_upscale import resize, upscale_tiled
from tests.sampling.test_a1111_img2img import a1111_from, pixels
from tests.sampling.test_a1111_inpaint import init_latents
from tests.sampling.test_a1111_path import CFG, NEGATIVE, PROMPT, SIZE, STEPS, a1111_reference, close

LANCZOS = Image.Resampling.LANCZOS


def split_grid(image, tile_w, tile_h, overlap):
    """A1111's images.split_grid, as written: [y, h, [[x, w, tile], ...]] rows."""
    w, h = image.size
    cols = math.ceil((w - overlap) / (tile_w - overlap))
    rows = math.ceil((h - overlap) / (tile_h - overlap))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = []
    for row in range(rows):
        row_images = []
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            row_images.append([x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))])
        grid.append([y, tile_h, row_images])
    return grid


def combine_grid(tiles, tile_h, image_w, image_h, overlap):
    """A1111's images.combine_grid, as written."""

    def make_mask_image(r):
        return Image.fromarray((r * 255 / overlap).astype(np.uint8), "L")

    mask_w = make_mask_image(np.arange(overlap, dtype=np.float32).reshape((1, overlap)).repeat(tile_h, axis=0))
    mask_h = make_mask_image(np.arange(overlap, dtype=np.float32).reshape((overlap, 1)).repeat(image_w, axis=1))
    combined_image = Image.new("RGB", (image_w, image_h))
    for y, h, row in tiles:
        combined_row = Image.new("RGB", (image_w, h))
        for x, w, tile in row:
            if x == 0:
                combined_row.paste(tile, (0, 0))
                continue
            combined_row.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w)
            combined_row.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if y == 0:
            combined_image.paste(combined_row, (0, 0))
            continue
        combined_image.paste(combined_row.crop((0, 0, combined_row.width, overlap)), (0, y), mask=mask_h)
        combined_image.paste(combined_row.crop((0, overlap, combined_row.width, h)), (0, y + overlap))
    return combined_image


@torch.no_grad()
def upscale_with_model(model, img, tile_size, tile_overlap):
    """A1111's upscaler_utils.upscale_with_model (pil_image_to_torch_bgr, torch_bgr_to_pil_image)."""

    def patch(tile):
        a = np.ascontiguousarray(np.transpose(np.array(tile.convert("RGB"))[:, :, ::-1], (2, 0, 1))) / 255
        out = model(torch.from_numpy(a).unsqueeze(0).float()).squeeze(0).float().cpu().clamp(0, 1).numpy()
        arr = (255.0 * np.moveaxis(out, 0, 2)).round().astype(np.uint8)[:, :, ::-1]
        return Image.fromarray(arr, "RGB")

    grid = split_grid(img, tile_size, tile_size, tile_overlap)
    new = []
    for y, h, row in grid:
        new_row = []
        for x, w, tile in row:
            out = patch(tile)
            s = out.width // tile.width
            new_row.append([x * s, w * s, out])
        new.append([y * s, h * s, new_row])
    return combine_grid(new, tile_size * s, img.width * s, img.height * s, tile_overlap * s)


def resize_image_0(im, width, height, upscaler, model=None):
    """A1111's images.resize_image(0, ...) with an upscaler (Upscaler.upscale and its do_upscale)."""
    if upscaler == "None":
        return im.resize((width, height), resample=LANCZOS)
    scale = max(width / im.width, height / im.height)
    if scale > 1.0:
        dest_w, dest_h = int((im.width * scale) // 8 * 8), int((im.height * scale) // 8 * 8)
        for i in range(3):
            if im.width >= dest_w and im.height >= dest_h and (i > 0 or scale != 1):
                break
            shape = (im.width, im.height)
            if upscaler in ("Nearest", "Lanczos"):
                resample = Image.Resampling.NEAREST if upscaler == "Nearest" else LANCZOS
                im = im.resize((int(im.width * scale), int(im.height * scale)), resample=resample)
            else:
                im = upscale_with_model(model, im, 192, 8)
            if shape == (im.width, im.height):
                break
        if im.width != dest_w or im.height != dest_h:
            im = im.resize((int(dest_w), int(dest_h)), resample=LANCZOS)
    if im.width != width or im.height != height:
        im = im.resize((width, height), resample=LANCZOS)
    return im


def tiny_esrgan(path, scale=2):
    spandrel = pytest.importorskip("spandrel")  # the optional extra: latentdiff[upscalers]
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=4, num_blocks=1, scale=scale)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return spandrel.ModelLoader().load_from_file(str(path)).eval()


def test_tiles_join_as_a1111s(tmp_path):
    """A picture larger than the tile: a 3 x 2 grid, its seams ramped over the overlap as A1111's."""
    model = tiny_esrgan(tmp_path / "x2.safetensors")
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    got = upscale_tiled(model, image, 24, 6)
    assert got.size == (112, 80)
    assert np.array_equal(np.asarray(got), np.asarray(upscale_with_model(model, image, 24, 6)))


@pytest.mark.parametrize("upscaler", ["none", "lanczos", "nearest"])
def test_the_pil_upscalers_resize_as_a1111s(upscaler):
    """A factor whose destination is not a multiple of 8 (A1111 rounds it down, then resizes)."""
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (44, 60, 3), dtype=np.uint8))
    want = resize_image_0(image, 104, 72, upscaler.title())
    assert np.array_equal(np.asarray(resize(None, image, (104, 72), upscaler)), np.asarray(want))


@pytest.mark.parametrize("upscaler", ["nearest", "esrgan"])
def test_hires_fix_with_a_pixel_upscaler_matches_a1111(pipe_sd1, tmp_path, upscaler):
    label, model, name = ("Nearest", None, upscaler) if upscaler == "nearest" else ("x2", None, None)
    if upscaler == "esrgan":
        name = str(tmp_path / "x2.safetensors")
        model = tiny_esrgan(name)
    first = a1111_reference(pipe_sd1, "euler_a", [5], rng="nv", latents=True)
    low = (255.0 * ((pipe_sd1.decode(first)[0] + 1) / 2).clamp(0, 1)).permute(1, 2, 0).numpy().astype(np.uint8)
    big = resize_image_0(Image.fromarray(low), 96, 96, label if model is None else "model", model)
    want = pixels(pipe_sd1, a1111_from(pipe_sd1, "euler_a", [5], init_latents(pipe_sd1, big), 3, 0.5, fixed=True))
    got = pipe_sd1(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=5,
                   scheduler="euler_a", prompt_syntax="plain", rng="nv", hires=1.5, hires_strength=0.5, hires_steps=6,
                   hires_upscaler=name)  # fmt: skip
    assert close(np.stack([np.asarray(im) for im in got]), want)
    assert "Hires upscaler: " + label in got[0].info["parameters"]  # as A1111 names it (a model: by its file)
    read = params_from_a1111(got[0].info["parameters"])[0]
    assert read["hires_upscaler"] == ("nearest" if model is None else "lanczos")  # a model's file: not known


def test_what_it_cannot_run_or_read_is_one_line(pipe_sd1, tmp_path):
    from safetensors.torch import save_file

    from latentdiff.errors import LatentDiffError, UsageError
    from latentdiff.formats.sr_model import load_sr_model
    from latentdiff.workflows.options import ImageOptions

    with pytest.raises(UsageError, match="model file .*missing.pth is missing"):  # generate: before any load
        ImageOptions(hires=1.5, hires_upscaler=str(tmp_path / "missing.pth")).preflight()
    with pytest.raises(UsageError, match="not the diffusion upscaler 'some/x4-upscaler'"):
        pipe_sd1(PROMPT, steps=1, width=SIZE, height=SIZE, rng="cpu", hires=1.5, hires_upscaler="some/x4-upscaler")
    save_file({"weight": torch.zeros(2, 2)}, str(tmp_path / "odd.safetensors"))
    (tmp_path / "old.pth").write_bytes(b"\x80\x02}q\x00.")  # a pickle
    for name, words in [("missing.pth", "is missing|spandrel"), ("odd.safetensors", "no upscaler model spandrel knows|spandrel"),
                        ("old.pth", "pickle file|spandrel")]:  # fmt: skip
        with pytest.raises(LatentDiffError, match=words):
            load_sr_model(tmp_path / name)
