"""Dataset discovery, robust image loading, transforms and buckets (latentdiff.data).

Every file is built here with Pillow in tmp_path: no network, no fixtures from elsewhere.
"""

from __future__ import annotations

import io
import json
import random
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff.errors import LatentDiffError, UsageError
from latentdiff.images.read import BadImageError, load_image, transform
from latentdiff.training.data.dataset import ImageCaptionDataset, assign_bucket, make_buckets
from latentdiff.training.data.order import DataOrder
from latentdiff.training.data.scan import Record, scan_dataset

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


# --- helpers that write test images -----------------------------------------------------------


def save(path: Path, im: Image.Image, caption: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kwargs)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def noise(size=(64, 48), seed=0) -> Image.Image:
    """Incompressible pixels, so a file cut in half is really missing image data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def halves(size=(40, 20), left=RED, right=BLUE) -> Image.Image:
    im = Image.new("RGB", size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def truncated(path: Path, fmt: str, keep: float = 0.5) -> None:
    buf = io.BytesIO()
    noise().save(buf, fmt)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])


def corrupted_png(path: Path) -> None:
    """Intact header, zeroed bytes in the middle of the compressed pixel data."""
    buf = io.BytesIO()
    noise().save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


def png_with_declared_size(path: Path, width: int, height: int) -> None:
    """A tiny valid-looking PNG whose header claims width x height (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))


def close(pixel, expected, tol=12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected))


# --- captions ---------------------------------------------------------------------------------


def test_captions_from_txt_jsonl_and_csv(tmp_path):
    save(tmp_path / "a.png", noise(), None)
    (tmp_path / "a.txt").write_bytes("\ufeff  a cat \n".encode("utf-8"))  # BOM + whitespace
    save(tmp_path / "b.JPG", noise())
    save(tmp_path / "sub" / "deep" / "c.webp", noise())
    rows = [
        {"file_name": "b.JPG", "text": " a dog ", "extra": [1, 2]},
        {"file_name": "sub/deep/c.webp", "text": "ünïcode caption"},
        {"file_name": "gone.png", "text": "no such file"},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    save(tmp_path / "sub" / "d.bmp", noise())
    (tmp_path / "sub" / "metadata.csv").write_text(
        '\ufefffile_name,text,score\nd.bmp,"red, green, and ""blue""",3\n', encoding="utf-8"
    )

    result = scan_dataset(tmp_path, 64)

    got = {r.path.relative_to(tmp_path).as_posix(): r.caption for r in result.records}
    assert got == {
        "a.png": "a cat",
        "b.JPG": "a dog",
        "sub/deep/c.webp": "ünïcode caption",
        "sub/d.bmp": 'red, green, and "blue"',
    }
    assert [r.path.name for r in result.records] == ["a.png", "b.JPG", "d.bmp", "c.webp"]  # by relpath
    assert result.skipped == [("gone.png", "missing file")]


def test_caption_precedence_txt_then_deepest_metadata(tmp_path):
    save(tmp_path / "sub" / "x.png", noise(), "from txt")
    save(tmp_path / "sub" / "y.png", noise())
    save(tmp_path / "sub" / "z.png", noise())
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f"sub/{n}.png", "text": "top"}) for n in "xyz")
    )
    (tmp_path / "sub" / "metadata.jsonl").write_text(json.dumps({"file_name": "y.png", "text": "deep"}))
    (tmp_path / "sub" / "metadata.csv").write_text("file_name,text\ny.png,csv\nz.png,csv\n")

    (tmp_path / "._x.png").write_bytes(b"macOS resource fork")  # hidden clutter is ignored
    save(tmp_path / ".cache" / "hidden.png", noise())

    result = scan_dataset(tmp_path, 64)

    assert [r.caption for r in result.records] == ["from txt", "deep", "csv"]
    assert result.skipped == []


def test_heldout_rows_dropped_unless_included(tmp_path):
    save(tmp_path / "images" / "train.png", noise(), "sidecar wins, split kept")
    save(tmp_path / "images" / "held.png", noise())
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "images/train.png", "text": "t", "split": "train"})
        + "\n"
        + json.dumps({"file_name": "images/held.png", "text": "h", "split": "heldout"})
        + "\n"
    )

    default = scan_dataset(tmp_path, 64)
    included = scan_dataset(tmp_path, 64, include_heldout=True)

    assert [(r.caption, r.split) for r in default.records] == [("sidecar wins, split kept", "train")]
    assert any("held out 1" in note for note in default.notes)
    assert sorted((r.caption, r.split) for r in included.records) == [
        ("h", "heldout"),
        ("sidecar wins, split kept", "train"),
    ]


def listed_file(message: str) -> Path:
    """The file a one-line refusal names as holding its full list."""
    assert "\n" not in message, message
    found = re.search(r"listed in (\S+?\.txt)", message)
    assert found, message
    return Path(found.group(1))


def test_missing_captions_is_one_line_naming_a_file_that_lists_them_all(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    for i in range(7):
        save(data / f"img{i}.png", noise(seed=i))
    save(data / "ok.png", noise(), "captioned")

    with pytest.raises(UsageError) as info:
        scan_dataset(data, 64, report_dir=out)

    message = str(info.value)
    assert info.value.exit_code == 2
    assert "7 image(s)" in message and "--missing-captions empty" in message
    assert "img0.png" in message and "img1.png" in message and "img2.png" not in message
    listing = listed_file(message)
    assert listing == out / "skipped.txt"
    rows = [line.split("\t") for line in listing.read_text().splitlines()]
    assert [name for name, _ in rows] == [f"img{i}.png" for i in range(7)]
    assert all("no caption" in why for _, why in rows)
    assert sorted(p.name for p in data.iterdir()) == sorted([*(f"img{i}.png" for i in range(7)), "ok.png", "ok.txt"])
    result = scan_dataset(data, 64, missing_captions="empty")
    assert sorted(r.caption for r in result.records) == [""] * 7 + ["captioned"]


def test_without_a_run_folder_the_list_goes_to_a_temporary_file_outside_the_dataset(tmp_path):
    save(tmp_path / "a.png", noise())
    with pytest.raises(UsageError) as info:
        scan_dataset(tmp_path, 64)
    listing = listed_file(str(info.value))
    try:
        assert tmp_path not in listing.parents and listing.read_text().startswith("a.png\tno caption")
    finally:
        listing.unlink()


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no images found"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("hi")), "no images found"),
    ],
)
def test_empty_or_missing_dataset_is_a_usage_error(tmp_path, setup, words):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(UsageError, match=words):
        scan_dataset(root, 64)


def test_bad_metadata_is_a_usage_error_with_location(tmp_path):
    save(tmp_path / "a.png", noise())
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{oops\n')
    with pytest.raises(UsageError, match="metadata.jsonl line 2"):
        scan_dataset(tmp_path, 64)
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("image,caption\na.png,x\n")
    with pytest.raises(UsageError, match="'file_name' and 'text' columns"):
        scan_dataset(tmp_path, 64)
    (tmp_path / "metadata.csv").write_text("file_name,text\n../escape.png,x\n")
    with pytest.raises(UsageError, match="outside the dataset"):
        scan_dataset(tmp_path, 64)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"resolution": 500}, "try 496 or 504"),
        ({"resolution": 0}, "try 8"),
        ({"resolution": 64, "missing_captions": "skip"}, "'error' or 'empty'"),
    ],
)
def test_bad_scan_options_are_usage_errors(tmp_path, kwargs, words):
    save(tmp_path / "a.png", noise(), "c")
    with pytest.raises(UsageError, match=words):
        scan_dataset(tmp_path, **kwargs)


# --- robust loading ---------------------------------------------------------------------------


def make_good_images(root: Path) -> dict[str, Path]:
    """One file per awkward-but-valid kind, each with a caption."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display needs a 90 degree clockwise turn
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent black must become white
    rgba.paste((255, 0, 0, 255), (0, 0, 8, 16))
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (0, 0, 8, 16))
    la = Image.new("LA", (16, 16), (100, 255))
    la.paste((0, 0), (8, 0, 16, 16))
    deep = np.full((16, 16), 65535, dtype=np.uint16)
    deep[:, 8:] = 32768
    deep[0, 8] = 1000  # clipping to 255 would turn this nearly black pixel white
    return {
        "rotated": save(root / "rotated.jpg", halves(), "c", exif=exif, quality=95),
        "rgba": save(root / "rgba.png", rgba, "c"),
        "palette": save(root / "palette.png", pal, "c", transparency=0),
        "cmyk": save(root / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "c"),
        "la": save(root / "la.png", la, "c"),
        "gray16": save(root / "gray16.png", Image.fromarray(deep), "c"),
        "bilevel": save(root / "bilevel.bmp", Image.new("1", (16, 16), 1), "c"),
        "tiff": save(root / "scan.TIFF", noise(), "c"),
        "gif": save(root / "anim.gif", noise().convert("P"), "c"),
    }


def make_bad_images(root: Path) -> dict[str, str]:
    """relpath -> a word its skip reason must contain."""
    truncated(root / "cut.png", "PNG")
    truncated(root / "cut.jpg", "JPEG")
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    corrupted_png(root / "corrupt.png")
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("this is not a picture")
    png_with_declared_size(root / "bomb.png", 30_000, 30_000)  # Pillow's hard error
    png_with_declared_size(root / "bomb2.png", 10_000, 10_000)  # Pillow only warns
    save(root / "tiny.png", noise((4, 4)))
    for name in (
        "cut.png",
        "cut.jpg",
        "garbage.jpg",
        "corrupt.png",
        "zero.png",
        "text.png",
        "bomb.png",
        "bomb2.png",
        "tiny.png",
    ):
        (root / name).with_suffix(".txt").write_text("c")
    return {
        "cut.png": "truncated",
        "cut.jpg": "truncated",
        "garbage.jpg": "not an image",
        "corrupt.png": "corrupt",
        "zero.png": "empty",
        "text.png": "not an image",
        "bomb.png": "decompression bomb",
        "bomb2.png": "decompression bomb",
        "tiny.png": "too small",
    }


def test_awkward_modes_load_as_correct_rgb(tmp_path):
    files = make_good_images(tmp_path)
    rotated = load_image(files["rotated"])
    assert rotated.size == (20, 40)  # stored 40x20, shown upright after EXIF rotation
    assert close(rotated.getpixel((10, 5)), RED) and close(rotated.getpixel((10, 35)), BLUE)
    rgba = load_image(files["rgba"])
    assert rgba.getpixel((2, 2)) == RED and rgba.getpixel((12, 2)) == WHITE
    palette = load_image(files["palette"])
    assert palette.getpixel((2, 2)) == (0, 255, 0) and palette.getpixel((12, 2)) == WHITE
    assert close(load_image(files["cmyk"]).getpixel((8, 8)), RED)
    la = load_image(files["la"])
    assert la.getpixel((2, 2)) == (100, 100, 100) and la.getpixel((12, 2)) == WHITE
    gray = np.asarray(load_image(files["gray16"]))
    assert gray.dtype == np.uint8
    assert gray[5, 2].tolist() == [255] * 3 and gray[5, 12].tolist() == [128] * 3
    assert gray[0, 8].tolist() == [4] * 3  # 1000/65535*255 = 3.9, scaled not clipped
    assert load_image(files["bilevel"]).getpixel((0, 0)) == WHITE
    for key in files:
        assert load_image(files[key]).mode == "RGB", key


def test_scan_keeps_good_and_reports_every_bad_file(tmp_path):
    good = make_good_images(tmp_path)
    bad = make_bad_images(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "lost.png", "text": "x"}))
    bad["lost.png"] = "missing file"

    result = scan_dataset(tmp_path, 64)

    assert sorted(r.path.name for r in result.records) == sorted(p.name for p in good.values())
    rotated = next(r for r in result.records if r.path.name == "rotated.jpg")
    assert (rotated.width, rotated.height) == (20, 40)
    out = result.write_skipped(tmp_path / "out")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert out.name == "skipped.txt" and len(lines) == len(bad)
    reasons = dict(line.split("\t", 1) for line in lines)
    assert reasons.keys() == bad.keys()
    for rel, word in bad.items():
        assert word in reasons[rel], (rel, reasons[rel])
    assert any("upscaled" in note for note in result.notes)  # every good image is < 64 px


def test_pixel_limit_is_configurable(tmp_path):
    path = save(tmp_path / "big.png", noise((40, 40)), "c")
    assert load_image(path).size == (40, 40)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(path, max_pixels=1000)
    save(tmp_path / "small.png", noise((20, 20)), "c")
    result = scan_dataset(tmp_path, 64, max_pixels=1000)
    assert [r.path.name for r in result.records] == ["small.png"]
    assert result.skipped[0][0] == "big.png"


def test_all_bad_is_one_line_before_training_naming_a_file_that_lists_them_all(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    make_bad_images(data)
    for name in ("also", "again"):
        (data / f"{name}.png").write_text("not a png either")
        (data / f"{name}.txt").write_text("c")
    with pytest.raises(UsageError) as info:
        scan_dataset(data, 64, report_dir=out)
    message = str(info.value)
    assert "all 11 were skipped" in message
    assert "'not an image Pillow can read' (4 of 11)" in message
    listing = listed_file(message)
    assert listing == out / "skipped.txt"
    rows = dict(line.split("\t") for line in listing.read_text().splitlines())
    images = sorted(p.name for p in data.iterdir() if p.suffix != ".txt")
    assert sorted(rows) == images and len(images) == 11
    assert rows["also.png"].startswith("not an image Pillow can read")
    assert all(name in message for name in images[:2]) and images[2] not in message


# --- transforms -------------------------------------------------------------------------------


def test_transform_shape_range_and_center_crop():
    im = halves((64, 32))  # resized to 64x32 already; the center 32x32 is half red, half blue
    out = transform(im, 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, transform(im, 32))
    assert torch.allclose(out[:, 16, 2], torch.tensor([1.0, -1.0, -1.0]))  # red at the left
    assert torch.allclose(out[:, 16, 29], torch.tensor([-1.0, -1.0, 1.0]))  # blue at the right
    big = transform(noise((300, 200)), 48)  # downscale path
    assert big.shape == (3, 48, 48) and -1 <= big.min() and big.max() <= 1
    assert transform(halves((50, 90)), (32, 64)).shape == (3, 64, 32)  # bucket (w, h)


def test_random_crop_and_flip_reproduce_from_rng():
    im = noise((96, 64))

    def run(seed):
        return transform(im, 32, crop="random", flip=True, rng=random.Random(seed))

    assert torch.equal(run(1), run(1))
    assert len({run(s).sum().item() for s in range(6)}) > 1
    with pytest.raises(ValueError, match="rng"):
        transform(im, 32, crop="random")


# --- buckets ----------------------------------------------------------------------------------


def test_make_buckets_properties():
    buckets = make_buckets(512, step=64, max_ratio=2.0)
    assert (512, 512) in buckets and len(buckets) >= 5
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512
        assert max(w, h) / min(w, h) <= 2.0 and (h, w) in buckets
    assert all(w % 32 == 0 for w, _ in make_buckets(256, step=32))
    with pytest.raises(UsageError):
        make_buckets(32, step=64)


def test_assign_bucket_picks_nearest_aspect():
    buckets = make_buckets(512, 64)
    assert assign_bucket(500, 500, buckets) == (512, 512)
    wide = assign_bucket(1600, 900, buckets)
    assert wide[0] > wide[1]
    assert assign_bucket(900, 1600, buckets) == wide[::-1]
    assert assign_bucket(4000, 100, buckets) == max(buckets, key=lambda b: b[0] / b[1])


def test_bucketed_batch_order_groups_and_reproduces():
    buckets = make_buckets(256, 64)
    rng = random.Random(0)
    sizes = [(256, 256), (400, 200), (200, 400)]
    records = [Record(Path(f"{i}.png"), "", *sizes[rng.randrange(3)]) for i in range(41)]
    bucket_of = [assign_bucket(r.width, r.height, buckets) for r in records]

    batches = DataOrder(41, 4, 7, bucket_of).epoch_batches(0)

    assert sorted(i for b in batches for i in b) == list(range(41))
    assert all(1 <= len(b) <= 4 for b in batches) and any(len(b) < 4 for b in batches)
    for batch in batches:
        assert len({bucket_of[i] for i in batch}) == 1
    assert batches == DataOrder(41, 4, 7, bucket_of).epoch_batches(0)
    assert batches != DataOrder(41, 4, 8, bucket_of).epoch_batches(0)
    assert batches != DataOrder(41, 4, 7, bucket_of).epoch_batches(1)


# --- dataset ----------------------------------------------------------------------------------


def test_dataset_items_reproduce_per_seed_epoch_index(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", noise((80, 48), seed=i), f"caption {i}")
    records = scan_dataset(tmp_path, 32).records

    ds = ImageCaptionDataset(records, 32, crop="random", flip=True, seed=5)
    item = ds[1]
    assert item["pixel_values"].shape == (3, 32, 32)
    assert item["caption"] == "caption 1" and item["index"] == 1
    ds.set_epoch(3)
    epoch3 = [ds[i]["pixel_values"] for i in range(3)]
    resumed = ImageCaptionDataset(records, 32, crop="random", flip=True, seed=5)
    resumed.set_epoch(3)
    assert all(torch.equal(a, resumed[i]["pixel_values"]) for i, a in enumerate(epoch3))
    ds.set_epoch(0)
    assert torch.equal(ds[1]["pixel_values"], item["pixel_values"])
    assert any(not torch.equal(ds[i]["pixel_values"], epoch3[i]) for i in range(3))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and len(batch["caption"]) == 3


def test_dataset_buckets_and_vanished_file(tmp_path):
    save(tmp_path / "wide.png", noise((128, 64)), "w")
    records = scan_dataset(tmp_path, 64).records
    ds = ImageCaptionDataset(records, 64, buckets=make_buckets(64, step=16))
    assert ds[0]["pixel_values"].shape == (3, 48, 80)  # (80, 48) is the nearest-to-2:1 bucket
    (tmp_path / "wide.png").write_bytes(b"")
    with pytest.raises(LatentDiffError, match="wide.png.*empty file"):
        ds[0]
