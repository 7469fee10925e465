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
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from latentdiff.batching import ImageCaptionDataset, assign_bucket, bucket_batches, make_buckets
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
