"""The CPU fine-tuning recipe, run as docs/finetuning.md shows it, with its time and what it taught.

    python benchmarks/finetune_emoji_recipe.py [--steps N] [--seeds 8]

Runs `latentdiff finetune examples/zorb --model checkpoints/emoji --out RUN --config
configs/finetune/emoji-lora.yaml` in a fresh process (wall time, spawn to exit), then draws "a zorb"
with the shipped model before and with the run after, seeds 0..N-1, and measures each image's
distance to the nearest training picture the way `eval-emoji` compares images (16x16, L2). It also
says how far the LoRA moved an unrelated prompt ("grinning face") and writes a before/after picture
(docs/finetune-zorb.png: top row before, bottom row after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from support import common  # noqa: E402

DATA = common.REPO_ROOT / "examples" / "zorb"
RECIPE = common.REPO_ROOT / "configs" / "finetune" / "emoji-lora.yaml"
BASE = common.REPO_ROOT / "checkpoints" / "emoji"


def images(model: Path, prompt: str, seeds: int) -> list:
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(str(model), device="cpu", dtype="fp32")
    pipe.progress = False
    return [pipe(prompt, seed=s)[0] for s in range(seeds)]


def nearest(ims: list, refs: np.ndarray) -> list[float]:
    from latentdiff.training.emoji.evaluate import _small

    return [float(np.sqrt(((refs - _small(im)) ** 2).sum(1)).min()) for im in ims]


def grid(rows: list[list], path: Path) -> None:
    from PIL import Image

    size = rows[0][0].size[0]
    out = Image.new("RGB", (size * len(rows[0]), size * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            out.paste(im, (c * size, r * size))
    out.quantize(256).save(path, optimize=True)  # a palette keeps the committed picture small


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help="override the recipe's max_steps")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--picture", default=str(common.REPO_ROOT / "docs" / "finetune-zorb.png"))
    ap.add_argument("--name", default="finetune_emoji_recipe")
    args = ap.parse_args()
    from PIL import Image

    from latentdiff.training.emoji.evaluate import _small

    meta = common.machine()
    run = Path(tempfile.mkdtemp(prefix="ld-recipe-")) / "zorb"
    cmd = [
        sys.executable,
        "-m",
        "latentdiff.cli",
        "finetune",
        str(DATA),
        "--model",
        str(BASE),
        "--out",
        str(run),
        "--config",
        str(RECIPE),
        *(["--max-steps", str(args.steps)] if args.steps else []),
    ]
    wall, rss, code, tail = common.run_child(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if code != 0:
        sys.exit(f"finetune failed ({code}):\n{tail}")
    common.log(f"finetune: {wall:.0f} s, peak RSS {rss:.0f} MiB")
    refs = np.stack([_small(Image.open(p)) for p in sorted(DATA.glob("*.png"))])
    before, after = images(BASE, "a zorb", args.seeds), images(run, "a zorb", args.seeds)
    face_before, face_after = images(BASE, "grinning face", args.seeds), images(run, "grinning face", args.seeds)
    moved = [float(np.sqrt(((_small(a) - _small(b)) ** 2).sum())) for a, b in zip(face_before, face_after)]
    d_before, d_after = nearest(before, refs), nearest(after, refs)
    # The distance between two different training pictures: what "looks like a zorb" measures as.
    between = [float(np.sqrt(((refs[i] - np.delete(refs, i, 0)) ** 2).sum(1)).min()) for i in range(len(refs))]
    steps = args.steps or int(
        next(x.split(":")[1] for x in RECIPE.read_text().splitlines() if x.startswith("max_steps"))
    )
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [
        {
            "prompt": "a zorb",
            "model": "shipped (before)",
            "median_dist_to_nearest_zorb": common.median(d_before),
            "max_dist": max(d_before),
        },
        {
            "prompt": "a zorb",
            "model": "after the recipe",
            "median_dist_to_nearest_zorb": common.median(d_after),
            "max_dist": max(d_after),
        },
        {
            "prompt": "grinning face",
            "model": "after vs before",
            "median_dist_to_nearest_zorb": None,
            "max_dist": None,
            "median_change": common.median(moved),
        },
    ]
    meta.update(
        {
            "steps": steps,
            "finetune_wall_s": round(wall, 1),
            "finetune_peak_rss_mib": round(rss),
            "s_per_step": round(wall / steps, 3),
            "dist_between_training_pictures": common.median(between),
            "first_loss": metrics[0]["loss"],
            "last_loss": metrics[-1]["loss"],
            "seeds": args.seeds,
            "samples": {"before": d_before, "after": d_after, "grinning_face_change": moved},
        }
    )
    grid([before, after], Path(args.picture))
    notes = (
        f"finetune (fresh process, the recipe's {steps} steps): {wall:.0f} s wall, {wall / steps:.2f} s a "
        f"step including start-up; loss {metrics[0]['loss']:.3f} at step {metrics[0]['step']} -> "
        f"{metrics[-1]['loss']:.3f} at {metrics[-1]['step']}. Distances: 16x16 RGB in [0, 1], L2 (eval-emoji's "
        f"measure); two training pictures lie {common.median(between):.2f} apart (median). Picture: "
        f"{Path(args.picture).name}, top row before, bottom row after, seeds 0-{args.seeds - 1}. "
        "The machine is shared with other jobs: see the load average."
    )
    common.write_results(
        args.name,
        rows,
        ["prompt", "model", "median_dist_to_nearest_zorb", "max_dist", "median_change"],
        meta,
        notes=notes,
    )
    print(notes)


if __name__ == "__main__":
    main()
