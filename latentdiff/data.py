"""Training data for `latentdiff finetune DATASET`: find images and captions, check every image
once before training starts, and turn them into tensors reproducibly.

Caption sources, most specific first (the first one found for an image wins):
  1. kohya style: `cat.png` + `cat.txt` beside it;
  2. Hugging Face imagefolder: `metadata.jsonl` rows {"file_name": ..., "text": ...};
  3. `metadata.csv` with `file_name` and `text` columns.
A metadata file covers paths relative to its own folder; a deeper one beats a shallower one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from latentdiff.errors import UsageError
from latentdiff.imageio import MAX_PIXELS, BadImageError, load_image, transform

__all__ = [
    "IMAGE_EXTENSIONS", "Record", "ScanResult", "scan_dataset", "load_image", "transform",
    "make_buckets", "assign_bucket", "bucket_batches", "ImageCaptionDataset",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
METADATA_FILES = ("metadata.jsonl", "metadata.csv")  # order = precedence within one folder
HELDOUT = "heldout"


@dataclass
class Record:
    """One usable image. width/height are after EXIF rotation; pixels are reloaded on use."""

    path: Path
    caption: str
    width: int
    height: int
    split: str | None = None


@dataclass
class ScanResult:
    records: list[Record]
    skipped: list[tuple[str, str]]  # (path relative to the dataset, reason)
    notes: list[str] = field(default_factory=list)  # things worth telling the user

    def write_skipped(self, out_dir: str | os.PathLike) -> Path:
        """Write OUT/skipped.txt, one "relpath<TAB>reason" line each (empty file if none)."""
        path = Path(out_dir) / "skipped.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Tabs/newlines in a name would break the one-line-per-file format.
        lines = [f"{_escape(rel)}\t{reason}\n" for rel, reason in self.skipped]
        path.write_text("".join(lines), encoding="utf-8")
        return path


def scan_dataset(
    root: str | os.PathLike,
    resolution: int,
    missing_captions: str = "error",
    include_heldout: bool = False,
    max_pixels: int = MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Find every image under `root`, pair it with a caption and open it once.

    Bad images are skipped with a reason rather than crashing training hours later; only
    when none is usable is it an error. Images without a caption are an error unless
    `missing_captions="empty"` (train them unconditionally).
    """
    if missing_captions not in ("error", "empty"):
        raise UsageError(f"--missing-captions must be 'error' or 'empty', not {missing_captions!r}")
    if resolution < 8 or resolution % 8:
        # The VAE works on 8x8 pixel blocks.
        near = sorted({max(8, resolution // 8 * 8), max(8, (resolution // 8 + 1) * 8)})
        raise UsageError(f"resolution {resolution} is not a positive multiple of 8; try "
                         + " or ".join(map(str, near)))
    root = _check_root(root)
    entries, skipped, notes = _discover(root, missing_captions, include_heldout)
    records: list[Record] = []
    for done, (rel, caption, split) in enumerate(entries, 1):
        try:
            # Decode fully to catch truncation, but keep only the size: datasets outgrow RAM.
            with load_image(root / rel, max_pixels) as im:
                records.append(Record(root / rel, caption, im.width, im.height, split))
        except BadImageError as err:
            skipped.append((rel, str(err)))
        if progress is not None:
            progress(done, len(entries))
    skipped.sort()
    if not records:
        raise UsageError(_all_bad_message(root, skipped))
    small = sum(min(r.width, r.height) < resolution for r in records)
    if small:
        notes.append(f"{small} image(s) are smaller than {resolution} px on the short side "
                     "and will be upscaled (blurry training data)")
    return ScanResult(records, skipped, notes)


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise UsageError(f"dataset folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise UsageError(f"dataset {str(path)!r} is not a folder; give the folder of images")
    return path.resolve()


def _discover(root: Path, missing_captions: str, include_heldout: bool):
    """Return ([(relpath, caption, split)] sorted by relpath, skipped, notes)."""
    images, metadata = _walk(root)
    captions, splits, heldout, skipped = _metadata_captions(root, metadata, include_heldout)
    images = (images | captions.keys()) - heldout
    for rel in images:
        # A .txt beside the image is the most specific source, so it overrides metadata.
        sidecar = (root / rel).with_suffix(".txt")
        if sidecar.is_file():
            try:
                captions[rel] = sidecar.read_text(encoding="utf-8-sig").strip()
            except UnicodeDecodeError:
                skipped.append((rel, f"caption file {sidecar.name} is not UTF-8 text"))
    images -= {rel for rel, _ in skipped}
    uncaptioned = sorted(images - captions.keys())
    if uncaptioned and missing_captions == "error":
        raise UsageError(_missing_captions_message(uncaptioned))
    if not images and not skipped:
        held = f"; {len(heldout)} held out by split=heldout" if heldout else ""
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise UsageError(f"no images found under {str(root)!r} (looked for {kinds}){held}")
    notes = []
    if heldout:
        notes.append(f"held out {len(heldout)} image(s) marked split=heldout in metadata (never trained on)")
    entries = [(rel, captions.get(rel, ""), splits.get(rel)) for rel in sorted(images)]
    return entries, skipped, notes


def _metadata_captions(root: Path, metadata: list[Path], include_heldout: bool):
    """Captions and splits from every metadata file, the deepest folder's winning."""
    captions: dict[str, str] = {}
    splits: dict[str, str] = {}
    heldout: set[str] = set()
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    # Within one folder metadata.jsonl comes before metadata.csv (METADATA_FILES order).
    order = lambda p: (-len(p.parts), str(p.parent), METADATA_FILES.index(p.name))  # noqa: E731
    for meta in sorted(metadata, key=order):
        for rel, caption, split in _read_metadata(root, meta):
            if rel in seen:
                continue
            seen.add(rel)
            if split == HELDOUT and not include_heldout:
                heldout.add(rel)
            elif not (root / rel).is_file():
                skipped.append((rel, "missing file"))
            else:
                captions[rel] = caption
                if split is not None:
                    splits[rel] = split
    return captions, splits, heldout, skipped


def _walk(root: Path) -> tuple[set[str], list[Path]]:
    images: set[str] = set()
    metadata: list[Path] = []
    for folder, dirs, files in os.walk(root):
        # Hidden entries are tool clutter (.git, .ipynb_checkpoints, macOS "._x.jpg" forks).
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            if name in METADATA_FILES:
                metadata.append(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                images.add(path.relative_to(root).as_posix())
    return images, metadata


def _read_metadata(root: Path, meta: Path) -> Iterator[tuple[str, str, str | None]]:
    """Yield (relpath from root, caption, split) for each row of a metadata file."""
    where = meta.relative_to(root).as_posix()
    rows = _jsonl_rows(meta, where) if meta.suffix == ".jsonl" else _csv_rows(meta, where)
    for line, row in rows:
        name, text = row.get("file_name"), row.get("text")
        if not isinstance(name, str) or not name or not isinstance(text, str):
            raise UsageError(
                f"{where} row {line}: needs a 'file_name' and a string 'text' (got {row!r:.200})"
            )
        target = os.path.normpath(meta.parent / name)
        if os.path.commonpath([str(root), target]) != str(root):
            raise UsageError(f"{where} row {line}: file_name {name!r} is outside the dataset")
        split = row.get("split")
        rel = Path(target).relative_to(root).as_posix()
        yield rel, text.strip(), split if isinstance(split, str) else None


def _jsonl_rows(meta: Path, where: str) -> Iterator[tuple[int, dict]]:
    with open(meta, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise UsageError(f"{where} line {line} is not valid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                example = '{"file_name": ..., "text": ...}'
                raise UsageError(f"{where} line {line} must be a JSON object like {example}")
            yield line, row


def _csv_rows(meta: Path, where: str) -> Iterator[tuple[int, dict]]:
    with open(meta, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "file_name" not in columns or "text" not in columns:
            raise UsageError(f"{where} needs 'file_name' and 'text' columns; found {columns}")
        for row in reader:
            yield reader.line_num, row


def _missing_captions_message(uncaptioned: list[str]) -> str:
    shown = "\n  ".join(uncaptioned[:5])
    more = f"\n  ... and {len(uncaptioned) - 5} more" if len(uncaptioned) > 5 else ""
    return (
        f"{len(uncaptioned)} image(s) have no caption (no .txt beside them and no metadata.jsonl/"
        f".csv row):\n  {shown}{more}\nAdd captions, or pass --missing-captions empty to train "
        "them with an empty caption."
    )


def _all_bad_message(root: Path, skipped: list[tuple[str, str]]) -> str:
    # Reasons carry file-specific detail after a colon or parenthesis; group by the lead phrase.
    kinds = Counter(reason.split(":")[0].split(" (")[0] for _, reason in skipped)
    reason, count = kinds.most_common(1)[0]
    first = "\n  ".join(f"{rel}: {why}" for rel, why in skipped[:5])
    return (
        f"no usable images under {str(root)!r}: all {len(skipped)} were skipped, most often for "
        f"'{reason}' ({count} of {len(skipped)}):\n  {first}"
    )


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


# --- aspect-ratio buckets ---------------------------------------------------------------------


def make_buckets(resolution: int, step: int = 64, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """All (w, h) with sides multiples of `step`, area <= resolution**2 and long/short <= max_ratio,
    keeping for each width only the tallest height that fits (the largest area)."""
    if step <= 0 or resolution < step:
        raise UsageError(f"bucket step {step} must be positive and at most resolution {resolution}")
    if max_ratio < 1:
        raise UsageError(f"max bucket aspect ratio {max_ratio} must be at least 1")
    area = resolution * resolution
    buckets = set()
    for width in range(step, area // step + 1, step):
        height = area // width // step * step
        if height >= step and max(width, height) / min(width, height) <= max_ratio:
            buckets.add((width, height))
    return sorted(buckets)


def assign_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log space, so 2:1 and 1:2 are symmetric);
    ties go to the larger area, so less of the image is upscaled."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1], b))


def bucket_batches(
    records: list[Record], buckets: list[tuple[int, int]], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Batches of record indices that share a bucket, in an order fixed by `rng`.

    The last partial batch of each bucket is kept (small buckets would otherwise never be
    trained on), so some batches are smaller than `batch_size`.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(assign_bucket(record.width, record.height, buckets), []).append(index)
    batches = []
    for bucket in sorted(groups):  # sorted: dict order must not leak into the rng stream
        indices = groups[bucket]
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    rng.shuffle(batches)
    return batches


# --- dataset ----------------------------------------------------------------------------------


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Reloads each image on access; per-item randomness comes from (seed, epoch, index) only.

    Deriving it per item (not from a global RNG) makes augmentation independent of worker count
    and of where a run was resumed. Call `set_epoch` before each epoch; with a DataLoader use
    persistent_workers=False so workers pick the new epoch up.
    """

    def __init__(self, records: list[Record], resolution: int, crop: str = "center",
                 flip: bool = False, seed: int = 0, buckets: list[tuple[int, int]] | None = None,
                 max_pixels: int = MAX_PIXELS):
        self.records, self.resolution, self.crop, self.flip = records, resolution, crop, flip
        self.seed, self.buckets, self.max_pixels, self.epoch = seed, buckets, max_pixels, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        # A string seed is hashed with SHA-512: stable across processes and Python versions.
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        return {"pixel_values": self._pixels(index, self.crop, self.flip, rng),
                "caption": self.records[index].caption, "index": index}

    def load(self, index: int) -> torch.Tensor:
        """The image without augmentation (center crop, no flip), for caching its latents."""
        return self._pixels(index, "center", False, None)

    def _pixels(self, index: int, crop: str, flip: bool, rng) -> torch.Tensor:
        record = self.records[index]
        size = assign_bucket(record.width, record.height, self.buckets) if self.buckets else self.resolution
        try:
            img = load_image(record.path, self.max_pixels)
        except BadImageError as err:
            # The file changed after scan_dataset checked it; stopping beats silently skipping.
            raise BadImageError(f"{record.path}: {err} (it was fine when scanned)") from None
        return transform(img, size, crop, flip, rng)
