"""The training dataset: scanned records turned into tensors by `ImageCaptionDataset`, whose
per-item randomness depends only on (seed, epoch, index), so resumed runs see the same images, and
the aspect-ratio buckets it resizes into."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from latentdiff.errors import UsageError
from latentdiff.images.read import (
    MAX_PIXELS,
    BadImageError,
    Placement,
    load_image,
    place,
    reload_training_image,
    transform,
)

if TYPE_CHECKING:
    from latentdiff.training.data.scan import Record


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


# --- dataset ----------------------------------------------------------------------------------


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Reloads each image on access; per-item randomness comes from (seed, epoch, index) only.

    Deriving it per item (not from a global RNG) makes augmentation independent of worker count
    and of where a run was resumed. Call `set_epoch` before each epoch; with a DataLoader use
    persistent_workers=False so workers pick the new epoch up.
    """

    def __init__(
        self,
        records: list[Record],
        resolution: int,
        crop: str = "center",
        flip: bool = False,
        seed: int = 0,
        buckets: list[tuple[int, int]] | None = None,
        max_pixels: int = MAX_PIXELS,
    ):
        self.records, self.resolution, self.crop, self.flip = records, resolution, crop, flip
        self.seed, self.buckets, self.max_pixels, self.epoch = seed, buckets, max_pixels, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        # A string seed is hashed with SHA-512: stable across processes and Python versions.
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        pixels, placement = self._pixels(index, self.crop, self.flip, rng)
        item = {
            "pixel_values": pixels,
            "size_ids": self.size_ids(index, placement),
            "caption": self.records[index].caption,
            "index": index,
        }
        if self.records[index].conditioning is not None:
            item["conditioning_values"] = self.conditioning(index, placement)
        return item

    def conditioning(self, index: int, placement: Placement | bool) -> torch.Tensor:
        """Image `index`'s conditioning image (3, H, W) in [0, 1] (diffusers' ControlNet input), cut as
        its target was (`placement`: the same resize, crop corner and flip), or, given a bool, as the
        unaugmented target (`unaugmented`), mirrored when True. A map of another size than its target
        is resized to the target's size first, so the two stay aligned."""
        record = self.records[index]
        if isinstance(placement, bool):
            placement = replace(place((record.width, record.height), self.target(index)), flipped=placement)
        try:
            img = load_image(record.conditioning, self.max_pixels)
        except BadImageError as err:  # changed since the scan checked it: stopping beats silently skipping
            raise BadImageError(f"{record.conditioning}: {err} (it was fine when scanned)") from None
        return transform(img, placement).add(1.0).div(2.0)

    def unaugmented(self, batch: int = 32):
        """Every image without augmentation, for caching its latents: batches of pixels (b, 3, H, W)
        with each image's `size_ids` as it is and mirrored, [(6,), (6,)]; in index order, one image
        a batch when bucketed (sizes differ)."""
        step = batch if self.buckets is None else 1
        n = len(self.records)
        for start in range(0, n, step):
            views = [self._pixels(i, "center", False, None) for i in range(start, min(n, start + step))]
            ids = [
                [self.size_ids(i, p), self.size_ids(i, replace(p, flipped=True))]
                for i, (_, p) in enumerate(views, start)
            ]
            yield torch.stack([pixels for pixels, _ in views]), ids

    def size_ids(self, index: int, placement: Placement) -> torch.Tensor:
        """SDXL's micro-conditioning of a sample: original size, crop corner, target size. (6,)"""
        record = self.records[index]
        return torch.tensor(placement.size_ids((record.width, record.height)), dtype=torch.float32)

    def target(self, index: int) -> int | tuple[int, int]:
        record = self.records[index]
        return assign_bucket(record.width, record.height, self.buckets) if self.buckets else self.resolution

    def _pixels(self, index: int, crop: str, flip: bool, rng) -> tuple[torch.Tensor, Placement]:
        return reload_training_image(self.records[index].path, self.target(index), crop, flip, rng, self.max_pixels)
