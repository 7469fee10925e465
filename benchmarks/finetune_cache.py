"""Fine-tuning throughput: latent caching (ours) vs re-encoding every batch through the VAE
(what diffusers' train_text_to_image.py does), same model, data, steps and batch size.

    python benchmarks/finetune_cache.py [--steps 12] [--repeats 3] [--resolution 128]

The model is small except for its VAE, which has Stable Diffusion's real architecture
(83M parameters, random weights): the VAE encoder's cost per image is what caching saves,
so it must be the real one. Both sides run alternately in one process; we report medians of
steady-state images/s (after the pre-pass) and of end-to-end images/s (pre-pass included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)


def make_model(root: Path, resolution: int) -> Path:
    from latentdiff.models.build import build_components
    from latentdiff.models.components import save_components
    from latentdiff.models.testing import WORDS, tiny_arch

    arch = tiny_arch("sd1")
    arch["vae"] = SD_VAE
    arch["unet"]["sample_size"] = resolution // 8
    c = build_components(arch, WORDS, seed=0)
    save_components(c, root / "model", "PNDMScheduler")
    return root / "model"


def make_dataset(root: Path, n: int, resolution: int) -> Path:
    from PIL import Image, ImageDraw

    d = root / "data"
    d.mkdir()
    for i in range(n):
        im = Image.new("RGB", (resolution + 16, resolution), (i * 37 % 255, 200, 100))
        ImageDraw.Draw(im).ellipse((8, 8, resolution // 2, resolution // 2), fill=(20, i * 11 % 255, 90))
        im.save(d / f"{i}.png")
        (d / f"{i}.txt").write_text(f"shape number {i}")
    return d


def run_once(dataset: Path, model: Path, out: Path, cache: bool, args) -> dict:
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    cfg = FinetuneConfig(
        dataset=str(dataset),
        model=str(model),
        out=str(out),
        method="lora",
        cache=cache,
        max_steps=args.steps,
        batch_size=args.batch_size,
        resolution=args.resolution,
        checkpoint_every=10**6,
        log_every=1,
        overwrite=True,
    )
    t0 = time.perf_counter()
    finetune(cfg)
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    images = args.steps * args.batch_size
    return {"steady": rows[-1]["images_per_s"], "end_to_end": images / total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune_cache.json"))
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, data = make_model(tmp, args.resolution), make_dataset(tmp, args.images, args.resolution)
        runs = {True: [], False: []}
        for _ in range(args.repeats):
            for cache in (True, False):  # alternate, so drifting machine load hits both sides
                runs[cache].append(run_once(data, model, tmp / f"run-{cache}", cache, args))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("steady", "end_to_end")} for k, v in runs.items()}
    result = {
        "config": vars(args),
        "cached": med[True],
        "re_encode": med[False],
        "speedup_steady": med[True]["steady"] / med[False]["steady"],
        "speedup_end_to_end": med[True]["end_to_end"] / med[False]["end_to_end"],
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| loop | steady images/s | end-to-end images/s |\n|---|---|---|")
    print(f"| cached latents (latentdiff) | {med[True]['steady']:.2f} | {med[True]['end_to_end']:.2f} |")
    print(f"| re-encode every batch (diffusers script) | {med[False]['steady']:.2f} | {med[False]['end_to_end']:.2f} |")
    print(
        f"speed-up: {result['speedup_steady']:.2f}x steady, {result['speedup_end_to_end']:.2f}x end to end "
        f"({args.steps} steps x batch {args.batch_size}, {args.images} images at {args.resolution}px, "
        f"median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
