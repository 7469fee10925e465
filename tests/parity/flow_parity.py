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


def pasted(decoded: np.ndarray, picture, mask) -> np.ndarray:
    """diffusers' inpainted image (H, W, 3) uint8 pasted over `picture` outside `mask` (unblurred),
    as ours returns it (diffusers returns the decoded image as it is)."""
    from PIL import Image

    from latentdiff.workflows.source import soft_mask

    return np.asarray(Image.composite(Image.fromarray(decoded), picture, soft_mask(mask, 0)), dtype=np.float32)


def box_mask(size: tuple[int, int]):
    """An L mask (w, h) = `size` repainting the box rows 8..24, columns 16..40."""
    from PIL import Image

    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[8:24, 16:40] = 255
    return Image.fromarray(mask)


def inpaint_pixels(pipe, picture, mask, seed: int, **kwargs) -> np.ndarray:
    """diffusers' inpaint pipeline's one image (1, H, W, 3) for `seed`, pasted as ours returns it."""
    w, h = picture.size
    gen = torch.Generator("cpu").manual_seed(seed)
    out = pipe(image=picture, mask_image=mask, generator=[gen], width=w, height=h, output_type="np", **kwargs)
    return pasted(np.round(out.images[0] * 255).astype(np.uint8), picture, mask)[None]


def repainted(got: np.ndarray, picture) -> bool:
    """Whether the box of `box_mask` was repainted (not the picture's pixels there)."""
    inside = np.asarray(picture, dtype=np.float32)[8:24, 16:40]
    return np.abs(got[0, 8:24, 16:40] - inside).mean() > 10


def picture(size: tuple[int, int], seed: int = 0):
    """A seeded random RGB picture of `size` (w, h): an init or reference image with detail everywhere."""
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
