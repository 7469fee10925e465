"""Conditioning images of a ControlNet dataset (`finetune --method controlnet`): each training image
is paired with the map its metadata row names (metadata.py's CONDITIONING_COLUMNS), checked as a
training image is: a regular file inside the dataset (or reached through a symlink only with
--follow-symlinks), decoded in full within the pixel limit (images/read.load_image). A row whose map
is missing or broken is skipped with its reason (OUT/skipped.txt); a dataset that names no map at
all is one line."""

from __future__ import annotations

from latentdiff.errors import UsageError
from latentdiff.images.read import BadImageError, load_image
from latentdiff.training.data.metadata import CONDITIONING_COLUMNS

NO_MAP = f"no conditioning image (its metadata row has no {CONDITIONING_COLUMNS[0]} column)"


def pair_conditioning(src, entries: list[tuple], skipped: list, max_pixels: int) -> list[tuple]:
    """The entries (rel, caption, split, conditioning rel, alternative captions) whose conditioning image
    is usable; the others go to `skipped` with the reason. `src`: scan.py's dataset root (its `path` and `problem`)."""
    if entries and all(entry[3] is None for entry in entries):
        raise UsageError(
            f"--method controlnet trains on images paired with a conditioning image, and no metadata.jsonl/"
            f"metadata.csv row under {str(src.path)!r} names one: give each row a {CONDITIONING_COLUMNS[0]} "
            "(a file in the dataset) beside its file_name and text"
        )
    kept = []
    for entry in entries:
        why = NO_MAP if entry[3] is None else _problem(src, entry[3], max_pixels)
        if why is None:
            kept.append(entry)
        else:
            skipped.append((entry[0], why))
    return kept


def _problem(src, rel: str, max_pixels: int) -> str | None:
    """Why the conditioning image `rel` cannot be used, or None."""
    why = src.problem(src.path / rel)
    if why is None:
        try:
            load_image(src.path / rel, max_pixels).close()
        except BadImageError as err:
            why = str(err)
    return None if why is None else f"conditioning image {rel}: {why}"
