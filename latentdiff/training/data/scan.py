"""Training data for `latentdiff finetune DATASET`: find images and captions, check every image
once before training starts (dataset.py turns the records into tensors).

Caption sources, most specific first (the first one found for an image wins):
  1. kohya style: `cat.png` + `cat.txt` beside it (the extension is `caption_extension`);
  2. Hugging Face imagefolder: `metadata.jsonl` rows {"file_name": ..., "text": ...};
  3. `metadata.csv` with `file_name` and `text` columns;
  4. kohya's DreamBooth folders: an image in a top-level `N_name` folder takes `name`.
A metadata file covers paths relative to its own folder; a deeper one beats a shallower one. A file
that a metadata row names as its conditioning image (conditioning.py) is no training image itself.
Each image is seen `repeats` times an epoch, N times in a top-level `N_name` folder (kohya's layout).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Callable

from latentdiff.errors import UsageError
from latentdiff.images.read import MAX_PIXELS, BadImageError, load_image
from latentdiff.runtime.reading import read_text
from latentdiff.training.data.conditioning import pair_conditioning
from latentdiff.training.data.kohya_folders import KohyaFolders
from latentdiff.training.data.listing import all_bad_message, missing_captions_message, write_listing
from latentdiff.training.data.metadata import MAX_CAPTION_CHARS, read_metadata

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
METADATA_FILES = ("metadata.jsonl", "metadata.csv")  # order = precedence within one folder
HELDOUT = "heldout"
MAX_CAPTION_BYTES = 4 * MAX_CAPTION_CHARS  # UTF-8 takes at most 4 bytes a character


@dataclass
class Record:
    """One usable image. width/height are after EXIF rotation; pixels are reloaded on use."""

    path: Path
    caption: str
    width: int
    height: int
    split: str | None = None
    repeats: int = 1  # times an epoch (kohya's N_name folders, --repeats)
    conditioning: Path | None = None  # its conditioning image (finetune --method controlnet)
    alt_captions: tuple[str, ...] = ()  # more captions of it (metadata's alt_texts; train-clip samples them)


@dataclass
class ScanResult:
    records: list[Record]
    skipped: list[tuple[str, str]]  # (path relative to the dataset, reason)
    notes: list[str] = field(default_factory=list)  # things worth telling the user

    def write_skipped(self, out_dir: str | os.PathLike) -> Path:
        """Write OUT/skipped.txt, one "relpath<TAB>reason" line each (empty file if none)."""
        return write_listing(self.skipped, out_dir)


def scan_dataset(
    root: str | os.PathLike,
    resolution: int,
    missing_captions: str = "error",
    include_heldout: bool = False,
    max_pixels: int = MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
    follow_symlinks: bool = False,
    caption_extension: str = ".txt",
    repeats: int = 1,
    conditioning: bool = False,
    report_dir: str | os.PathLike | None = None,
) -> ScanResult:
    """Find every image under `root`, pair it with a caption and open it once.

    Bad images are skipped with a reason rather than crashing training hours later; only
    when none is usable is it an error. Images without a caption are an error unless
    `missing_captions="empty"` (train them unconditionally). Only regular files are opened (a FIFO
    would hang), and symlinks leading outside `root` are skipped unless `follow_symlinks`. Captions
    are read from `caption_extension` files beside the images; each image counts `repeats` times an
    epoch, or N times in a top-level folder named `N_name` (kohya's layout, see kohya_folders.py).
    `conditioning`: every image needs a usable conditioning image (conditioning.py), else it is skipped.
    A refusal about many files is one line naming the file that lists them all: `report_dir`/skipped.txt
    (the run folder), or a temporary file when it is None (listing.py).
    """
    if missing_captions not in ("error", "empty"):
        raise UsageError(f"--missing-captions must be 'error' or 'empty', not {missing_captions!r}")
    if resolution < 8 or resolution % 8:
        # The VAE works on 8x8 pixel blocks.
        near = sorted({max(8, resolution // 8 * 8), max(8, (resolution // 8 + 1) * 8)})
        raise UsageError(f"resolution {resolution} is not a positive multiple of 8; try " + " or ".join(map(str, near)))
    root = _check_root(root)
    folders = KohyaFolders(repeats)
    src = _Root(root, follow_symlinks)
    entries, skipped, notes = _discover(src, missing_captions, include_heldout, caption_extension, folders, report_dir)
    if conditioning:
        entries = pair_conditioning(src, entries, skipped, max_pixels)
    records: list[Record] = []
    for done, (rel, caption, split, cond, alts) in enumerate(entries, 1):
        try:
            # Decode fully to catch truncation, but keep only the size: datasets outgrow RAM.
            with load_image(root / rel, max_pixels) as im:
                record = Record(
                    root / rel, caption, im.width, im.height, split, folders.repeats(rel), alt_captions=alts
                )
                records.append(replace(record, conditioning=root / cond) if conditioning else record)
        except BadImageError as err:
            skipped.append((rel, str(err)))
        if progress is not None:
            progress(done, len(entries))
    skipped.sort()
    if not records:
        raise UsageError(all_bad_message(skipped, report_dir, root))
    notes += folders.notes(records)
    small = sum(min(r.width, r.height) < resolution for r in records)
    if small:
        notes.append(
            f"{small} image(s) are smaller than {resolution} px on the short side "
            "and will be upscaled (blurry training data)"
        )
    return ScanResult(records, skipped, notes)


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise UsageError(f"dataset folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise UsageError(f"dataset {str(path)!r} is not a folder; give the folder of images")
    return path.resolve()


@dataclass
class _Root:
    """The dataset folder and whether files may lead outside it through symlinks."""

    path: Path
    follow_symlinks: bool

    def problem(self, path: Path) -> str | None:
        """Why `path` cannot be read as a dataset file, or None when it can."""
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return "broken symlink" if os.path.islink(path) else "missing file"
        except OSError as err:
            return f"cannot read file: {err.strerror or err}"
        if not stat.S_ISREG(mode):
            return "not a regular file (a folder, FIFO, socket or device)"
        real = Path(os.path.realpath(path))
        if not self.follow_symlinks and self.path not in real.parents:
            return "a symlink to a file outside the dataset folder (pass --follow-symlinks to use it)"
        return None


def _discover(
    src: _Root,
    missing_captions: str,
    include_heldout: bool,
    caption_extension: str = ".txt",
    folders: KohyaFolders | None = None,
    report_dir: str | os.PathLike | None = None,
):
    """Return ([(relpath, caption, split, conditioning relpath, alternative captions)] sorted by relpath,
    skipped, notes)."""
    images, metadata, skipped = _walk(src)
    captions, splits, heldout, bad_rows, conditions, alts = _metadata_captions(src, metadata, include_heldout)
    skipped += bad_rows
    maps = set(conditions.values()) - captions.keys()  # conditioning images without a row of their own
    images = (images | captions.keys()) - heldout - maps
    root = src.path
    for rel in images:
        # A .txt beside the image is the most specific source, so it overrides metadata.
        sidecar = (root / rel).with_name(PurePosixPath(rel).stem + caption_extension)
        if os.path.lexists(sidecar):
            why = src.problem(sidecar)
            caption = _read_caption(sidecar) if why is None else _Unusable(f"caption file {sidecar.name}: {why}")
            if isinstance(caption, _Unusable):
                skipped.append((rel, str(caption)))
            else:
                captions[rel] = caption
    images -= {rel for rel, _ in skipped}
    if folders is not None:
        captions.update(folders.captions(images - captions.keys()))
    uncaptioned = sorted(images - captions.keys())
    if uncaptioned and missing_captions == "error":
        raise UsageError(missing_captions_message(uncaptioned, skipped, caption_extension, report_dir, root))
    if not images and not skipped:
        held = f"; {len(heldout)} held out by split=heldout" if heldout else ""
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise UsageError(f"no images found under {str(root)!r} (looked for {kinds}){held}")
    notes = []
    if heldout:
        notes.append(f"held out {len(heldout)} image(s) marked split=heldout in metadata (never trained on)")
    entries = [
        (rel, captions.get(rel, ""), splits.get(rel), conditions.get(rel), alts.get(rel, ())) for rel in sorted(images)
    ]
    return entries, skipped, notes


def _metadata_captions(src: _Root, metadata: list[Path], include_heldout: bool):
    """Captions, splits, conditioning images and alternative captions from every metadata file, the
    deepest folder's winning."""
    captions: dict[str, str] = {}
    alts: dict[str, tuple[str, ...]] = {}
    splits: dict[str, str] = {}
    conditions: dict[str, str] = {}
    heldout: set[str] = set()
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    root = src.path
    # Within one folder metadata.jsonl comes before metadata.csv (METADATA_FILES order).
    order = lambda p: (-len(p.parts), str(p.parent), METADATA_FILES.index(p.name))  # noqa: E731
    for meta in sorted(metadata, key=order):
        for rel, caption, split, conditioning, alternatives in read_metadata(root, meta):
            if rel in seen:
                continue
            seen.add(rel)
            if conditioning is not None:
                conditions[rel] = conditioning
            if split == HELDOUT and not include_heldout:
                heldout.add(rel)
            elif (why := src.problem(root / rel)) is not None:
                skipped.append((rel, why))
            else:
                captions[rel] = caption
                if alternatives:
                    alts[rel] = alternatives
                if split is not None:
                    splits[rel] = split
    return captions, splits, heldout, skipped, conditions, alts


def _walk(src: _Root) -> tuple[set[str], list[Path], list[tuple[str, str]]]:
    images: set[str] = set()
    metadata: list[Path] = []
    skipped: list[tuple[str, str]] = []
    root = src.path
    # Symlinked folders are entered only with follow_symlinks.
    for folder, dirs, files in os.walk(root, followlinks=src.follow_symlinks):
        # Hidden entries are tool clutter (.git, .ipynb_checkpoints, macOS "._x.jpg" forks).
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            if name not in METADATA_FILES and path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            rel = path.relative_to(root).as_posix()
            if (why := src.problem(path)) is not None:
                skipped.append((rel, why))
            elif name in METADATA_FILES:
                metadata.append(path)
            else:
                images.add(rel)
    return images, metadata, skipped


class _Unusable(str):
    """Why a caption file cannot be used (a reason, told apart from a caption by its type)."""


def _read_caption(path: Path) -> str:
    """A caption file's text, or an `_Unusable` reason: bounded in bytes and characters, UTF-8, and
    a regular file checked on the opened descriptor (a FIFO swapped in after the scan never blocks)."""
    try:
        text = read_text(path, "caption file", MAX_CAPTION_BYTES)
    except UsageError as e:
        return _Unusable(str(e).replace(f"caption file {path}", f"caption file {path.name}", 1))
    if len(text) > MAX_CAPTION_CHARS:
        return _Unusable(
            f"caption file {path.name} holds {len(text):,} characters; at most {MAX_CAPTION_CHARS:,} are trained on"
        )
    return text.strip()
