"""Cold start: `latentdiff generate ... --steps 1` as a fresh process vs a fresh Python process
that imports diffusers and runs StableDiffusionPipeline on the same model (diffusers_generate.py).

Each contender is one new process per run (imports, weight loading, one step, VAE decode, PNG,
interpreter exit), timed from spawn to exit; peak RSS is that child's own ru_maxrss (wait4).
Runs alternate (L D D L L D ...), after one warm-up each so the page cache holds the weights
for both.

    python benchmarks/cold_start.py                       # the small model (shipped, else tiny)
    python benchmarks/cold_start.py --sd15 --size 256 --dtype bf16
    python benchmarks/cold_start.py --omp-wait-policy PASSIVE   # same OpenMP setting for both
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import common  # noqa: E402

FLOOR_SCRIPT = """
import os, sys
import torch
from safetensors.torch import load_file
for c in ("unet", "vae", "text_encoder"):
    d = os.path.join(sys.argv[1], c)
    for f in os.listdir(d):
        if f.endswith(".safetensors"):
            load_file(os.path.join(d, f))
os._exit(0)
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: the shipped model, else the tiny test model)")
    ap.add_argument("--sd15", action="store_true", help="use the SD1.5-architecture random model")
    ap.add_argument("--size", type=int, help="image size (default: the model's native size)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--omp-wait-policy",
        choices=["inherit", "PASSIVE", "ACTIVE"],
        default="inherit",
        help="OMP_WAIT_POLICY given to both children (inherit: as this shell has it; "
        "latentdiff's CLI then picks PASSIVE itself)",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also time a process that only imports torch, reads the weights and exits: "
        "the start-up any torch implementation pays (no model code, no image)",
    )
    ap.add_argument("--name", help="results file name (default: derived from the case)")
    args = ap.parse_args(argv)

    if args.sd15:
        model, label = common.sd15_model(), "sd15-random"
    else:
        model, label = common.small_model(args.model)
    size = args.size or common.native_size(model)
    meta = common.machine()
    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    env["HF_HUB_OFFLINE"] = "1"
    out = Path(tempfile.mkdtemp(prefix="ld-cold-"))
    exe = shutil.which("latentdiff")
    ours = ([exe] if exe else [sys.executable, "-m", "latentdiff.cli"]) + [
        "generate",
        "a red apple",
        "--model",
        str(model),
        "--steps",
        str(args.steps),
        "--width",
        str(size),
        "--height",
        str(size),
        "--dtype",
        args.dtype,
        "--device",
        "cpu",
        "--guidance",
        str(args.guidance),
        "--seed",
        "0",
        "--out",
        str(out),
        "--quiet",
    ]
    theirs = [
        sys.executable,
        str(common.BENCH_DIR / "support" / "diffusers_generate.py"),
        str(model),
        str(out / "d.png"),
        "--steps",
        str(args.steps),
        "--size",
        str(size),
        "--dtype",
        args.dtype,
        "--guidance",
        str(args.guidance),
    ]
    floor = [sys.executable, "-c", FLOOR_SCRIPT, str(model)]
    rss: dict[str, list[float]] = {"latentdiff": [], "diffusers": [], "torch-floor": []}

    def child(name, cmd):
        def run():
            wall, peak, code, tail = common.run_child(cmd, env=env, cwd=str(common.REPO_ROOT))
            if code != 0:
                raise SystemExit(f"{name} failed (exit {code}):\n{tail}")
            rss[name].append(peak)
            return wall

        return run

    common.log(
        f"cold start on {model} ({label}), {size}px, {args.steps} step(s), {args.dtype}; load {common.load_average()}"
    )
    contenders = {"latentdiff": child("latentdiff", ours), "diffusers": child("diffusers", theirs)}
    if args.floor:
        contenders["torch-floor"] = child("torch-floor", floor)
    times = common.interleaved(
        contenders,
        repeats=args.repeats,
        warmup=1,
        on_round=lambda r, t: common.log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in t.items())),
    )
    shutil.rmtree(out, ignore_errors=True)
    med = {k: common.median(v) for k, v in times.items()}
    rows = [
        {
            "contender": k,
            "model": label,
            "size": size,
            "dtype": args.dtype,
            "steps": args.steps,
            "median_s": med[k],
            "min_s": min(times[k]),
            "max_s": max(times[k]),
            "peak_rss_mib": common.median(rss[k][1:] or rss[k]),
            "ratio_vs_diffusers": med[k] / med["diffusers"],
        }
        for k in times
    ]
    meta.update(
        {
            "omp_wait_policy": args.omp_wait_policy,
            "repeats": args.repeats,
            "times": times,
            "ours_cmd": " ".join(ours),
            "diffusers_cmd": " ".join(theirs),
        }
    )
    name = args.name or f"cold_start-{label}-{size}-{args.dtype}-omp_{args.omp_wait_policy.lower()}"
    common.write_results(
        name,
        rows,
        [
            "contender",
            "model",
            "size",
            "dtype",
            "steps",
            "median_s",
            "min_s",
            "max_s",
            "peak_rss_mib",
            "ratio_vs_diffusers",
        ],
        meta,
    )


if __name__ == "__main__":
    main()
