"""Warm latency on CPU: latentdiff.Pipeline vs diffusers.StableDiffusionPipeline, same weights.

Both pipelines are loaded once from the same folder in the same dtype (or each in its own, see
--diffusers-dtype), warmed up, then called alternately with the same prompt, scheduler (the model's
own), steps, size, guidance and seed. Reported per case: median seconds per image, median seconds
per denoising step (the time between consecutive step ends, so text encoding and VAE decode are
excluded), their ratio ours/diffusers, the time of the first (warm-up) call, the RSS that loading
each pipeline added (load_rss_mib), that its first call left behind (first_call_rss_mib: caches,
e.g. our prepacked bf16 weights) and the peak RSS rise during a timed call (activations), and how
far the two images are apart (max pixel difference and PSNR of ours against diffusers' image). RSS
figures are process-wide deltas, so memory that glibc keeps from an earlier case can hide a later
allocation: read them within a case.

    python benchmarks/generate_cpu.py --case small                 # shipped model, else tiny
    python benchmarks/generate_cpu.py --case sd15 --size 256 --dtype bf16 --steps 4
    python benchmarks/generate_cpu.py --case sd15 --size 512 --dtype fp32 --steps 2 --repeats 2
    python benchmarks/generate_cpu.py --case small --compile       # adds latentdiff+compile
    python benchmarks/generate_cpu.py --case sd15 --size 512 --dtype auto --diffusers-dtype fp32 --steps 20
                                                                   # each library's default dtype

OpenMP: by default both contenders run with OMP_WAIT_POLICY=PASSIVE (set here before torch is
imported) because on a machine shared with other jobs the default spin-waiting makes every
multi-threaded timing erratic; `--omp-wait-policy inherit` keeps the caller's environment.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["small", "sd15"], default="small")
    ap.add_argument("--model", help="model folder for --case small (default: shipped model, else tiny)")
    ap.add_argument("--size", type=int, nargs="+", help="image sizes (default: native for small; 256 for sd15)")
    ap.add_argument(
        "--dtype",
        nargs="+",
        default=None,
        help="fp32, bf16 and/or auto for latentdiff (default: fp32 small; bf16 sd15)",
    )
    ap.add_argument(
        "--diffusers-dtype",
        choices=["fp32", "bf16"],
        default=None,
        help="diffusers' dtype (default: latentdiff's; auto -> fp32, diffusers' own default). "
        "`--dtype auto --diffusers-dtype fp32` compares each library's default",
    )
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: 20 small, 4 sd15)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per contender (default: 10 small, 3 sd15)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time latentdiff with compile=True")
    ap.add_argument(
        "--all-threads",
        action="store_true",
        help="also time latentdiff on all torch threads (it picks 1 thread for small UNets)",
    )
    ap.add_argument("--no-diffusers", action="store_true", help="time latentdiff only")
    ap.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE", "inherit"], default="PASSIVE")
    ap.add_argument("--name", help="results file name")
    return ap.parse_args(argv)


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.omp_wait_policy != "inherit":
    os.environ["OMP_WAIT_POLICY"] = ARGS.omp_wait_policy  # must precede `import torch`

import numpy as np  # noqa: E402
import torch  # noqa: E402
from support import common  # noqa: E402


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run_case(model: Path, label: str, size: int, dtype_name: str, steps: int, args) -> list[dict]:
    from latentdiff import Pipeline

    theirs = args.diffusers_dtype or ("fp32" if dtype_name == "auto" else dtype_name)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[theirs]
    common.log(f"{label} {size}px {dtype_name} {steps} steps: loading; load {common.load_average()}")
    contenders, clocks, rss, images, loaded = {}, {}, {}, {}, {}
    dtypes = {"diffusers": theirs}  # what each contender really ran in

    def add_ours(name, compile_, threads="auto"):
        r0 = common.current_rss_mb()
        pipe = Pipeline.from_pretrained(str(model), device="cpu", dtype=dtype_name, compile=compile_)
        loaded[name] = common.current_rss_mb() - r0
        dtypes[name] = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(pipe.dtype, str(pipe.dtype))
        if threads != "auto":
            pipe.threads = threads  # None: the process's torch thread count
        pipe.progress = True
        clock = clocks[name] = common.StepClock()
        pipe.progress_bar = clock.ours_progress  # our progress hook doubles as the step clock

        def call():
            clock.start()
            with common.PeakRSS() as r:
                images[name] = pipe(
                    common.PROMPT, steps=steps, guidance=args.guidance, width=size, height=size, seed=0
                )[0]
            clock.finish()
            rss.setdefault(name, []).append(r.rise_mb)

        contenders[name] = call

    add_ours("latentdiff", False)
    if args.compile:
        add_ours("latentdiff+compile", True)
    if args.all_threads:
        add_ours(f"latentdiff-{torch.get_num_threads()}threads", False, threads=None)
    if not args.no_diffusers:
        r0 = common.current_rss_mb()
        ref = common.diffusers_pipeline(model, dtype)
        loaded["diffusers"] = common.current_rss_mb() - r0
        clock = clocks["diffusers"] = common.StepClock()

        def call_ref():
            clock.start()
            gens = [torch.Generator("cpu").manual_seed(0)]
            with common.PeakRSS() as r:
                images["diffusers"] = ref(
                    common.PROMPT,
                    num_inference_steps=steps,
                    guidance_scale=args.guidance,
                    height=size,
                    width=size,
                    generator=gens,
                    callback_on_step_end=clock.theirs_callback,
                ).images[0]
            clock.finish()
            rss.setdefault("diffusers", []).append(r.rise_mb)

        contenders["diffusers"] = call_ref

    def progress(r, times):
        common.log(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    t0 = time.perf_counter()
    # Warm-up calls (torch.compile compiles here) are reported as first_call_s, not in the medians.
    warm, warm_rss = {}, {}
    for _ in range(args.warmup):
        for name, fn in contenders.items():
            w0, r0 = time.perf_counter(), common.current_rss_mb()
            fn()
            warm.setdefault(name, time.perf_counter() - w0)
            warm_rss.setdefault(name, common.current_rss_mb() - r0)
    for name in contenders:
        clocks[name].step_times, rss[name] = [], []
    times = common.interleaved(contenders, repeats=args.repeats, warmup=0, on_round=progress)
    common.log(f"  done in {time.perf_counter() - t0:.0f}s; load {common.load_average()}")
    base_img = images.get("diffusers")
    base_img_t = common.median(times["diffusers"]) if "diffusers" in times else None
    base_step = common.median(clocks["diffusers"].step_times) if "diffusers" in clocks else None
    rows = []
    for name in contenders:
        img_s, step_s = common.median(times[name]), common.median(clocks[name].step_times)
        row = {
            "model": label,
            "size": size,
            "dtype": dtypes[name],
            "steps": steps,
            "contender": name,
            "s_per_image": img_s,
            "s_per_step": step_s,
            "first_call_s": warm[name],
            "ratio_image": img_s / base_img_t if base_img_t else None,
            "ratio_step": step_s / base_step if base_step else None,
            "rss_rise_mib": common.median(rss[name]),
            "load_rss_mib": loaded[name],
            "first_call_rss_mib": warm_rss[name],
            "times": [round(x, 4) for x in times[name]],
        }
        if base_img is not None and name != "diffusers":
            a, b = np.asarray(images[name], dtype=int), np.asarray(base_img, dtype=int)
            row["max_px_diff"] = int(np.abs(a - b).max())
            row["psnr_db"] = psnr(a, b)
        if name == "latentdiff+compile":
            a, b = np.asarray(images[name], dtype=int), np.asarray(images["latentdiff"], dtype=int)
            row["max_px_diff_vs_eager"] = int(np.abs(a - b).max())
        rows.append(row)
    contenders.clear()
    gc.collect()
    return rows


def main():
    args = ARGS
    # Import both libraries up front so each pipeline's load_rss_mib counts its weights, not imports.
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextConfig, CLIPTextModel  # noqa: F401

    from latentdiff.runtime.libraries import quiet_libraries

    quiet_libraries()
    meta = common.machine()
    meta["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(default)")
    if args.case == "small":
        model, label = common.small_model(args.model)
        sizes = args.size or [common.native_size(model)]
        dtypes = args.dtype or ["fp32"]
        steps = args.steps or 20
        args.repeats = args.repeats or 10
    else:
        model, label = common.sd15_model(), "sd15-random"
        sizes = args.size or [256]
        dtypes = args.dtype or ["bf16"]
        steps = args.steps or 4
        args.repeats = args.repeats or 3
    rows = []
    for size in sizes:
        for dt in dtypes:
            rows += run_case(model, label, size, dt, steps, args)
    name = args.name or f"generate_cpu-{label}-{'_'.join(map(str, sizes))}-{'_'.join(dtypes)}"
    cols = [
        "model",
        "size",
        "dtype",
        "steps",
        "contender",
        "s_per_image",
        "ratio_image",
        "s_per_step",
        "ratio_step",
        "first_call_s",
        "load_rss_mib",
        "first_call_rss_mib",
        "rss_rise_mib",
        "max_px_diff",
        "psnr_db",
    ]
    if args.compile:
        cols.append("max_px_diff_vs_eager")
    meta.update({"repeats": args.repeats, "guidance": args.guidance, "prompt": common.PROMPT})
    common.write_results(name, rows, cols, meta)


if __name__ == "__main__":
    main()
