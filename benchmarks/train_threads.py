"""Training step time by intra-op thread count: `finetune` (LoRA and full) and `train-vae` on the
shipped model's sizes, with 1 thread against torch's default (one per core), in one run.

    python benchmarks/train_threads.py                      # shipped model, lora + full + vae, 1 vs all cores
    python benchmarks/train_threads.py --cases lora --steps 4 --repeats 2

Each round runs every case once per thread count, the order rotated each round (A B, B A, ...), so
drifting load from other jobs hits both sides; a run's first `--warmup` optimizer steps (and its
caching pre-pass) are not timed. A step's time is the time between two optimizer steps (a global
optimizer hook), so it covers the data, forward, backward and update. Reported: the median step
time of each side over all rounds, and the ratio to 1 thread (above 1: slower than 1 thread).
This is the measurement behind `runtime.threads.cpu_threads_for`, the default of `--num-threads`.

OpenMP: like `latentdiff finetune`, threads wait passively (OMP_WAIT_POLICY=PASSIVE, set here before
torch is imported); `--omp-wait-policy inherit` keeps the caller's environment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARGS = None
if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="base model for finetune (default: the shipped model)")
    ap.add_argument("--cases", nargs="+", default=["lora", "full", "vae"], choices=["lora", "full", "vae"])
    ap.add_argument("--threads", nargs="+", type=int, help="thread counts (default: 1 and os.cpu_count())")
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    ap.add_argument("--repeats", type=int, default=3, help="rounds")
    ap.add_argument(
        "--batch", type=int, default=4, help="finetune batch size (train-vae uses configs/vae/emoji.yaml's)"
    )
    ap.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE", "inherit"], default="PASSIVE")
    ap.add_argument("--name", help="results file name (default: train_threads-MODEL)")
    ARGS = ap.parse_args()
    if ARGS.omp_wait_policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = ARGS.omp_wait_policy  # must precede `import torch`


from support import common  # noqa: E402

STAMPS: list[float] = []  # perf_counter after every optimizer step of this process


def make_dataset(root: Path, n: int = 16, size: int = 64) -> Path:
    from PIL import Image, ImageDraw

    root.mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (size, size), (255, 255, 255))
        ImageDraw.Draw(im).ellipse((8, 8, size - 8, size - 8), fill=((60 * i) % 255, 120, 200 - 10 * i))
        im.save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a round face number {i}")
    return root


def run(case: str, threads: int, model: Path, data: Path, out: Path) -> list[float]:
    """Seconds per timed optimizer step of one run."""
    shutil.rmtree(out, ignore_errors=True)
    steps = ARGS.warmup + ARGS.steps
    STAMPS.clear()
    if case == "vae":
        import yaml

        from latentdiff.training.vae import VaeTrainConfig, train_vae

        recipe = yaml.safe_load((common.REPO_ROOT / "configs" / "vae" / "emoji.yaml").read_text())
        recipe.update(
            dataset=str(data),
            out=str(out),
            max_steps=steps,
            warmup_steps=0,
            num_threads=threads,
            checkpoint_every=10**6,
            log_every=10**6,
            eval_train_images=1,
            mixed_precision="no",
        )
        train_vae(VaeTrainConfig(**recipe))
    else:
        from latentdiff.training.config import FinetuneConfig
        from latentdiff.training.loop import finetune

        finetune(
            FinetuneConfig(
                dataset=str(data),
                model=str(model),
                out=str(out),
                method=case,
                max_steps=steps,
                batch_size=ARGS.batch,
                resolution=64,
                num_threads=threads,
                checkpoint_every=10**6,
                log_every=10**6,
            )
        )
    first = max(ARGS.warmup, 1)  # the first step's time has no stamp before it
    return [b - a for a, b in zip(STAMPS[first - 1 :], STAMPS[first:])]


def main() -> None:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(lambda *_: STAMPS.append(time.perf_counter()))
    model, label = common.small_model(ARGS.model)
    counts = ARGS.threads or sorted({1, os.cpu_count() or 1})
    meta = {
        **common.machine(),
        "model": label,
        "threads": counts,
        "steps": ARGS.steps,
        "warmup": ARGS.warmup,
        "repeats": ARGS.repeats,
        "batch": ARGS.batch,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    work = Path(tempfile.mkdtemp(prefix="ld-threads-"))
    data = make_dataset(work / "data")
    times = {(c, n): [] for c in ARGS.cases for n in counts}
    try:
        for r in range(ARGS.repeats):
            for case in ARGS.cases:
                order = counts[r % len(counts) :] + counts[: r % len(counts)]
                for n in order:
                    t = run(case, n, model, data, work / f"out-{case}")
                    times[case, n] += t
                    common.log(f"round {r + 1}: {case} {n} thread(s): median {common.median(t):.3f} s/step")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for case in ARGS.cases:
        base = common.median(times[case, counts[0]])
        for n in counts:
            m = common.median(times[case, n])
            rows.append(
                {
                    "case": {"vae": "train-vae"}.get(case, f"finetune {case}"),
                    "threads": n,
                    "s_per_step": m,
                    "steps_per_s": 1 / m,
                    f"vs_{counts[0]}_thread": m / base,
                    "steps_timed": len(times[case, n]),
                    "samples": times[case, n],
                }
            )
    name = ARGS.name or f"train_threads-{label}"
    notes = (
        "Step = time between two optimizer steps, after the warm-up steps; median over all rounds. "
        "The machine is shared with other jobs: see the load average above; ratios come from one run."
    )
    common.write_results(
        name,
        rows,
        ["case", "threads", "s_per_step", "steps_per_s", f"vs_{counts[0]}_thread", "steps_timed"],
        meta,
        notes=notes,
    )


if __name__ == "__main__":
    main()
