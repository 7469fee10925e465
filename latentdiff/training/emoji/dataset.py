"""Build a text-to-image training set by rendering the Noto Color Emoji font.

Every fully-qualified emoji in Unicode's emoji-test.txt becomes one 64x64 (or `--size` 16..128)
white-background RGB image captioned with its exact CLDR name ("red apple", "flag: Chile",
"woman biking: dark skin tone"). The output is a Hugging Face imagefolder:

    OUT/images/0001.png ...   one image per emoji, numbered in emoji-test.txt order
    OUT/metadata.jsonl        file_name, text, split, group, subgroup, codepoints[, alt_texts]
    OUT/README.md             licences and counts

The data comes from two Debian packages (bookworm: font 2.042, emoji-test.txt for Emoji 15.0):

    apt-get update && apt-get install -y fonts-noto-color-emoji unicode-data libraqm0

Pillow must lay text out with Raqm, or ZWJ sequences (families, "woman biking: dark skin
tone"), flags and skin-tone modifiers come out as several glyphs side by side. PyPI wheels of
Pillow bundle Raqm but load FriBiDi at run time (Debian: libfribidi0, pulled in by libraqm0);
builds against the system libraries use libraqm0 itself.

The names, their groups and the held-out split come from `emoji_names.py`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.training.emoji.names import (
    APT_COMMAND,
    DEFAULT_EMOJI_TEST,
    Emoji,
    heldout_names,
    missing_input,
    parse_emoji_test,
)

DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # CBDT bitmap font: FreeType only loads the strike it has, 109 px
IMAGE_SIZE = 64
FIT_SIZE = 56  # leaves a 4 px white margin so nothing touches the edge (scaled with the size)
# Noto's bitmaps are 136 px wide: 128 px images (112 px glyphs) are the largest drawn without
# enlarging the font's own pixels; the cascade's super-resolution stage trains on that size.
SIZES = range(16, 129, 8)
# A single Noto glyph is 136 px wide at size 109; a sequence that fell apart into several
# glyphs is at least two of them (about 226 px for a broken flag), so 1.5 cells separates them.
FELL_APART_RATIO = 1.5
_PAD = 32


def load_emoji_font(path: str | Path = DEFAULT_FONT):
    """Open the colour emoji font with Raqm layout, or say what to install."""
    from PIL import ImageFont, features

    path = Path(path)
    if not path.is_file():
        raise missing_input("Noto Color Emoji font", path, "--font")
    # Without Raqm Pillow falls back to basic layout with only a warning, and every ZWJ
    # sequence, flag and skin tone would render as a row of separate glyphs.
    if not features.check("raqm"):
        raise UsageError(
            "Pillow cannot use Raqm text layout, so multi-codepoint emoji would "
            f"render as several glyphs; install it with `{APT_COMMAND}` "
            "(PyPI Pillow wheels also need libfribidi0)"
        )
    try:
        return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    except OSError as exc:
        raise UsageError(
            f"cannot load {path} at size {FONT_SIZE} ({exc}); it must be a colour "
            "bitmap emoji font such as NotoColorEmoji.ttf"
        ) from exc


def glyph_cell_width(font) -> int:
    """Width of one emoji cell in this font, measured on U+1F600 grinning face."""
    left, _, right, _ = font.getbbox("\U0001f600")
    return right - left


def render_emoji(chars: str, font, size: int = IMAGE_SIZE):
    """Render one emoji to a `size` x `size` white RGB image; also return the drawn width in pixels.

    The width is that of the ink before scaling: about one cell for a correctly shaped
    emoji, several cells if a sequence fell apart, 0 if the font drew nothing.
    """
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(chars)
    canvas = Image.new("RGBA", (right - left + 2 * _PAD, bottom - top + 2 * _PAD), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((_PAD - left, _PAD - top), chars, font=font, embedded_color=True)
    out = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        return out.convert("RGB"), 0
    glyph = canvas.crop(bbox)
    scale = size * FIT_SIZE / IMAGE_SIZE / max(glyph.size)
    fitted = tuple(max(1, round(side * scale)) for side in glyph.size)
    glyph = glyph.resize(fitted, Image.Resampling.LANCZOS)  # Pillow premultiplies RGBA here
    out.alpha_composite(glyph, ((size - fitted[0]) // 2, (size - fitted[1]) // 2))
    return out.convert("RGB"), bbox[2] - bbox[0]


def _record(e: Emoji, file_name: str, heldout: set[str], variants: bool) -> dict:
    record = {
        "file_name": file_name,
        "text": e.name,
        "split": "heldout" if e.name in heldout else "train",
        "group": e.group,
        "subgroup": e.subgroup,
        "codepoints": e.codepoints,
    }
    if variants:
        record["alt_texts"] = [f"{e.name}, {e.subgroup}", f"{e.name}, {e.group.lower()}"]
    return record


def _remove_stale_images(images: Path, keep: set[str]) -> None:
    # A rebuild from a shorter emoji-test.txt must not leave images that metadata.jsonl
    # no longer lists. Only our own NNNN.png names are touched.
    for png in images.glob("*.png"):
        if re.fullmatch(r"\d{4,}\.png", png.name) and png.name not in keep:
            png.unlink()


def render_glyphs(emojis: list[Emoji], font, size: int = IMAGE_SIZE, desc: str = "rendering"):
    """(emoji, image, verdict) for each emoji: "ok" when it renders as a single glyph, else "blank"
    or "fell_apart" (see build_emoji_dataset). A progress bar on stderr."""
    from tqdm.auto import tqdm

    cell = glyph_cell_width(font)
    for e in tqdm(emojis, desc=desc, unit="emoji", file=sys.stderr, dynamic_ncols=True):
        image, width = render_emoji(e.chars, font, size)
        yield e, image, "blank" if width == 0 else "fell_apart" if width > FELL_APART_RATIO * cell else "ok"


def _render_all(emojis: list[Emoji], font, images: Path, heldout: set[str], variants: bool, size: int):
    """Write one PNG per emoji that renders as a single glyph; return records and rejects."""
    records, blank, fell_apart = [], [], []
    for e, image, verdict in render_glyphs(emojis, font, size, "build-emoji: rendering"):
        if verdict == "blank":
            blank.append(e.name)
        elif verdict == "fell_apart":
            fell_apart.append(e.name)
        else:
            file_name = f"{e.index + 1:04d}.png"
            image.save(images / file_name, format="PNG")
            records.append(_record(e, f"images/{file_name}", heldout, variants))
    return records, blank, fell_apart


def _warn_rejects(fell_apart: list[str], blank: list[str]) -> None:
    for label, names in (("fell apart into several glyphs", fell_apart), ("rendered blank", blank)):
        if names:
            warnings.warn(
                f"{len(names)} emoji {label} and were skipped (font older than "
                f"emoji-test.txt, or no Raqm?): {', '.join(names[:5])}",
                stacklevel=3,
            )


def build_emoji_dataset(
    out_dir: str | Path,
    emoji_test: str | Path = DEFAULT_EMOJI_TEST,
    font: str | Path = DEFAULT_FONT,
    variants: bool = True,
    size: int = IMAGE_SIZE,
) -> dict:
    """Render every fully-qualified emoji into OUT (see module docstring); return a summary.

    Emoji the font draws as nothing ("blank") or as several glyphs ("fell_apart") are
    skipped with a warning rather than written as wrong training pictures. The output
    bytes depend only on the inputs, so two builds are identical. Images of two sizes built
    from the same inputs list the same emoji in the same order, so they pair up by file name.
    """
    if size not in SIZES:
        raise UsageError(f"--size must be a multiple of 8 from 16 to 128, got {size}")
    start = time.perf_counter()
    emojis = parse_emoji_test(emoji_test)
    ttf = load_emoji_font(font)
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    records, blank, fell_apart = _render_all(emojis, ttf, images, heldout_names(emojis), variants, size)
    _remove_stale_images(images, {Path(r["file_name"]).name for r in records})
    with open(out_dir / "metadata.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary = {
        "out_dir": str(out_dir),
        "size": size,
        "emoji_in_file": len(emojis),
        "images": len(records),
        "train": sum(r["split"] == "train" for r in records),
        "heldout": sum(r["split"] == "heldout" for r in records),
        "fell_apart": fell_apart,
        "blank": blank,
    }
    (out_dir / "README.md").write_text(_readme(summary, Path(emoji_test), Path(font)), encoding="utf-8")
    _warn_rejects(fell_apart, blank)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def _readme(summary: dict, emoji_test: Path, font: Path) -> str:
    skipped = summary["fell_apart"] + summary["blank"]
    return f"""# Noto Color Emoji text-to-image set

{summary["images"]} images, {summary["size"]}x{summary["size"]} RGB on white, one per fully-qualified emoji in
`{emoji_test.name}`, captioned (`text`) with the exact Unicode CLDR name.
Built by `latentdiff build-emoji` (`latentdiff/training/emoji/dataset.py`) from `{font.name}`.

| split | images |
|---|---|
| train | {summary["train"]} |
| heldout | {summary["heldout"]} |
| skipped (blank or not one glyph) | {len(skipped)} |

`heldout` holds out one single-skin-tone variant per base name, rotating through the five
tones; never train on it. `alt_texts` are optional caption variants with the CLDR subgroup
and group; `text` is always the exact name.

## Credits and licences

- Emoji artwork: Noto Color Emoji, Copyright 2013-2017 Google Inc. and Arjen Nienhuis
  (https://github.com/googlefonts/noto-emoji). The images and graphics are licensed under
  the Apache License 2.0; the font file is licensed under the SIL Open Font License 1.1
  (see /usr/share/doc/fonts-noto-color-emoji/copyright). The OFL does not extend to
  documents made with the font; these images derive from the Apache-2.0 artwork.
- Names, groups and subgroups: Unicode emoji-test.txt, Copyright Unicode, Inc., under the
  Unicode terms of use (https://www.unicode.org/terms_of_use.html).
"""


DESCRIPTION = "Render Noto Color Emoji into a text-to-image training set (64x64 unless --size)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The build options, one definition for `latentdiff build-emoji` and `python -m latentdiff.training.emoji.dataset`."""
    parser.add_argument("out", metavar="OUT", help="output directory")
    parser.add_argument(
        "--emoji-test", default=str(DEFAULT_EMOJI_TEST), help="Unicode emoji-test.txt (default: %(default)s)"
    )
    parser.add_argument("--font", default=str(DEFAULT_FONT), help="colour emoji font (default: %(default)s)")
    parser.add_argument(
        "--size",
        type=int,
        default=IMAGE_SIZE,
        help="image side in pixels, a multiple of 8 from 16 to 128 (default %(default)s)",
    )


def build(args: argparse.Namespace) -> dict:
    """Build the dataset the parsed options ask for and print its summary."""
    summary = build_emoji_dataset(args.out, args.emoji_test, args.font, size=args.size)
    for key, value in summary.items():
        if isinstance(value, list):
            value = f"{len(value)}" + (f" ({', '.join(value)})" if value else "")
        print(f"{key}: {value}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="latentdiff build-emoji", description=DESCRIPTION)
    add_arguments(parser)
    return build(parser.parse_args(argv))


if __name__ == "__main__":
    try:
        main()
    except UsageError as exc:  # the same one line the latentdiff CLI prints
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
