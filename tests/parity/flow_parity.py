"""What the transformer families' parity tests share (tests/parity/test_flux.py, test_sd3.py): our
fp32 CPU pipeline and diffusers' on the same folder, the reference's pixels for per-image seeds
(image k of a call: seed + k) rounded as ours, and the 1/255 check."""

from __future__ import annotations

import numpy as np
import torch


def ours(path):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(path, device="cpu", dtype="fp32")
    pipe.progress = False
    return pipe


def reference(path, cls_name: str, **parts):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(path, dtype=torch.float32, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(i, dtype=np.float32) for i in images])


def reference_pixels(pipe, seed: int, n: int, size: tuple[int, int], **kwargs) -> np.ndarray:
    gens = [torch.Generator("cpu").manual_seed(seed + k) for k in range(n)]
    out = pipe(num_images_per_prompt=n, generator=gens, width=size[0], height=size[1], output_type="np", **kwargs)
    return np.round(out.images * 255)


def close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    assert ref.std() > 5  # a real picture, not a flat one that would match anything
    assert np.abs(got - ref).max() <= 1


def picture(size: tuple[int, int], seed: int = 0):
    """A seeded random RGB picture of `size` (w, h): an init or reference image with detail everywhere."""
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
