"""`eval-emoji --cascade`: what the super-resolution stage of a cascade adds (issue 14).

For each held-out name and seed: the base model's image (upscale off), the cascade's upscale of
that very image (the model's own upscaler, or --upscaler), and a bicubic upscale of it, each
against the true high-resolution render of the name (a `build-emoji --size` set: the same names
under the same file names). Reported: mean PSNR and SSIM of the cascade and of bicubic, and the
nearest-reference top-1 (emoji_eval's measure) of the base image and of the cascade's output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.models.configs import own_upscaler
from latentdiff.training.emoji.evaluate import (
    REFERENCE_PIXELS,
    _small,
    check_writable,
    heldout_rows,
    load_image_of,
    load_pipeline,
    load_references,
    progress_bar,
    ranks,
    read_rows,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 RGB images, channels averaged, with the Gaussian window of Wang et al. (2004)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        raise UsageError("eval-emoji --cascade needs scikit-image for SSIM: pip install 'latentdiff[eval]'") from None
    return float(
        structural_similarity(
            a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


def _truth_rows(truth: Path, rows: list[dict]) -> list[dict]:
    """The high-resolution set's rows, refused unless they name the same emoji under the same files."""
    meta = truth / "metadata.jsonl"
    if not os.path.lexists(meta):
        raise UsageError(f"--cascade {truth}: no metadata.jsonl; build it with `latentdiff build-emoji DIR --size 128`")
    high = read_rows(meta)
    if [(r["file_name"], r["text"]) for r in high] != [(r["file_name"], r["text"]) for r in rows]:
        raise UsageError(
            f"--cascade {truth} does not hold the same names under the same file names as the dataset; "
            "build both with `latentdiff build-emoji` from the same emoji-test.txt"
        )
    return high


def evaluate_cascade(
    pipe,
    dataset: Path,
    truth: Path,
    upscaler=None,
    steps=None,
    guidance=None,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    batch: int = 32,
    n_heldout: int | None = None,
    references: tuple[list[dict], np.ndarray] | None = None,
) -> dict:
    rows, refs = references or load_references(dataset)
    _truth_rows(truth, rows)
    ref = upscaler or own_upscaler(pipe.model_dir, pipe.components.defaults)
    if ref is None:
        raise UsageError(f"{pipe.model_ref} names no upscaler in its latentdiff.json; pass --upscaler MODEL")
    held = heldout_rows(rows, n_heldout)
    scores = {"cascade": [], "bicubic": []}  # (psnr, ssim) per image
    base_ranks, up_ranks = [], []
    with progress_bar(len(seeds) * len(held), "eval-emoji --cascade: images") as bar:
        for seed in seeds:
            for i in range(0, len(held), batch):
                chunk = held[i : i + batch]
                bases = pipe([rows[j]["text"] for j in chunk], steps=steps, guidance=guidance, seed=seed, upscale=False)
                ups = [
                    pipe.upscale(im, prompt=rows[j]["text"], seed=im.info["latentdiff"]["seed"], upscaler=ref)
                    for j, im in zip(chunk, bases)
                ]
                for j, base, up in zip(chunk, bases, ups):
                    # Bounded by the size compared with: a larger truth is refused below, a far larger one here.
                    most = max(REFERENCE_PIXELS, up.width * up.height)
                    true = np.asarray(load_image_of(truth / rows[j]["file_name"], "--cascade image", most))
                    if up.size != true.shape[1::-1]:
                        raise UsageError(
                            f"the cascade makes {up.width}x{up.height} images but {truth} holds "
                            f"{true.shape[1]}x{true.shape[0]} ones; build it at the cascade's size"
                        )
                    for name, im in (("cascade", up), ("bicubic", base.resize(up.size, Image.BICUBIC))):
                        pixels = np.asarray(im.convert("RGB"))
                        scores[name].append((psnr(pixels, true), ssim(pixels, true)))
                base_ranks.append(ranks(np.stack([_small(im) for im in bases]), chunk, refs))
                up_ranks.append(ranks(np.stack([_small(im) for im in ups]), chunk, refs))
                bar.update(len(chunk))
    result = {
        "n": len(held),
        "seeds": list(seeds),
        "upscaler": str(ref),
        "top1_base": float((np.concatenate(base_ranks) < 1).mean()),
        "top1_cascade": float((np.concatenate(up_ranks) < 1).mean()),
    }
    for name, pairs in scores.items():
        arr = np.array(pairs, dtype=np.float64)
        # an identical image (inf dB) counts as 100 dB, so one exact match does not make the mean infinite
        result[name] = {"psnr": float(np.mean(np.minimum(arr[:, 0], 100.0))), "ssim": float(arr[:, 1].mean())}
    print(
        f"cascade  PSNR {result['cascade']['psnr']:.2f} dB SSIM {result['cascade']['ssim']:.4f} | bicubic PSNR "
        f"{result['bicubic']['psnr']:.2f} dB SSIM {result['bicubic']['ssim']:.4f} | top-1 base {result['top1_base']:.3f} "
        f"cascade {result['top1_cascade']:.3f} (n={len(held)}, seeds {','.join(map(str, seeds))})",
        file=sys.stderr,
        flush=True,
    )
    return result


def run_cascade(
    dataset: str,
    truth: str,
    model=None,
    upscaler=None,
    steps=None,
    guidance=None,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    out=None,
    n_heldout: int | None = None,
) -> dict:
    check_writable(out, "--out")
    # The sets are read, and the dataset's images checked, before the model loads (minutes).
    references = load_references(Path(dataset))
    _truth_rows(Path(truth), references[0])
    pipe = load_pipeline(model)
    result = evaluate_cascade(
        pipe, Path(dataset), Path(truth), upscaler, steps, guidance, seeds, n_heldout=n_heldout, references=references
    )
    if out:
        Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result
