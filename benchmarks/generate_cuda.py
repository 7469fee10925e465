"""CUDA throughput: latentdiff (eager and compile=True) vs diffusers' default (SDPA), same weights.

SD1.5-architecture random model at 512x512, 20 and 50 steps, batch 1 and 4, fp16 and bf16 by
default. Reported per configuration: it/s (denoising steps per second, measured between
synchronised step ends), seconds per image, peak CUDA memory (max allocated), the FLOPs of one
image (counted once with torch.utils.flop_counter.FlopCounterMode on the eager modules: text
encoder + every UNet call + VAE decode) and the fraction of the GPU's peak dense FLOP/s reached.

    python benchmarks/generate_cuda.py                                   # the full matrix on cuda
    python benchmarks/generate_cuda.py --steps 20 --batch 1 --dtype fp16
    python benchmarks/generate_cuda.py --device cpu --tiny --no-compile  # logic check, no GPU

STATUS: written and dry-run on CPU with the tiny model only (`--device cpu --tiny`); no GPU was
available when it was written, so no CUDA figure in this repository comes from it yet.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import common  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Dense (no sparsity) tensor-core peaks in TFLOP/s for fp16/bf16, from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756.0
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(pipe, prompt, steps, size, batch, guidance) -> tuple[float, int]:
    """FLOPs of one call of our eager pipeline (all images of the batch), and its UNet calls."""
    calls = []
    h = pipe.components.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with FlopCounterMode(display=False) as fc:
            pipe(prompt, steps=steps, guidance=guidance, width=size, height=size, seed=0, num_images=batch)
    finally:
        h.remove()
    return float(fc.get_total_flops()), len(calls)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model instead of SD1.5 (dry runs)")
    ap.add_argument("--size", type=int, default=None, help="default: 512 (SD1.5) or the tiny model's 64")
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--dtype", nargs="+", default=["fp16", "bf16"], choices=list(DTYPES))
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the compile=True contender")
    ap.add_argument("--peak-tflops", type=float, help="peak dense FLOP/s of the device, in TFLOP/s")
    ap.add_argument("--name", help="results file name")
    args = ap.parse_args(argv)

    from latentdiff import Pipeline

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; for a logic check run with --device cpu --tiny")
    if args.tiny:
        model, label = common.small_model(None)
    else:
        model, label = common.sd15_model(), "sd15-random"
    size = args.size or common.native_size(model)
    peak = peak_tflops(device, args.peak_tflops)
    meta = common.machine()
    meta.update({"device": str(device), "peak_tflops": peak, "repeats": args.repeats})
    rows = []
    for dt in args.dtype:
        dtype = DTYPES[dt]
        common.log(f"{label} {size}px {dt} on {device}: loading")
        pipes = {"latentdiff": Pipeline.from_pretrained(str(model), device=str(device), dtype=dt)}
        if not args.no_compile:
            pipes["latentdiff+compile"] = Pipeline.from_pretrained(str(model), device=str(device), dtype=dt,
                                                                   compile=True)
        ref = common.diffusers_pipeline(model, dtype, device=device)
        for p in pipes.values():
            p.progress = False
        for steps in args.steps:
            for batch in args.batch:
                flops, unet_calls = count_flops(pipes["latentdiff"], common.PROMPT, steps, size, batch, args.guidance)
                clocks = {n: common.StepClock(device, mark_first=True) for n in [*pipes, "diffusers"]}
                step_times = {n: [] for n in clocks}
                mem = {n: 0 for n in clocks}

                def ours(name):
                    pipe, clock = pipes[name], clocks[name]
                    pipe._progress = clock.ours_progress

                    def run():
                        clock.marks = []
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(device)
                        pipe(common.PROMPT, steps=steps, guidance=args.guidance, width=size, height=size, seed=0,
                             num_images=batch)
                        sync(device)
                        step_times[name].append(clock.marks[-1] - clock.marks[0])
                        if device.type == "cuda":
                            mem[name] = max(mem[name], torch.cuda.max_memory_allocated(device) / 2**20)
                    return run

                def theirs():
                    clock = clocks["diffusers"]
                    clock.marks = []
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    gens = [torch.Generator("cpu").manual_seed(s) for s in range(batch)]
                    t0 = time.perf_counter()
                    ref([common.PROMPT] * batch, num_inference_steps=steps, guidance_scale=args.guidance, height=size,
                        width=size, generator=gens, callback_on_step_end=clock.theirs_callback)
                    sync(device)
                    # diffusers has no hook before its first step: count from the call's start
                    step_times["diffusers"].append(clock.marks[-1] - t0 if clock.marks else float("nan"))
                    if device.type == "cuda":
                        mem["diffusers"] = max(mem["diffusers"], torch.cuda.max_memory_allocated(device) / 2**20)

                contenders = {n: ours(n) for n in pipes}
                contenders["diffusers"] = theirs
                common.log(f"  {steps} steps, batch {batch}: warm-up (compiles on the first call)")
                times = common.interleaved(contenders, repeats=args.repeats, warmup=1)
                for n in step_times:  # drop the warm-up call
                    step_times[n] = step_times[n][1:]
                base = common.median(times["diffusers"])
                for n, ts in times.items():
                    img = common.median(ts) / batch
                    loop = common.median(step_times[n])
                    rows.append({
                        "dtype": dt, "steps": steps, "batch": batch, "contender": n,
                        "it_per_s": steps / loop, "s_per_image": img, "speedup_vs_diffusers": base / common.median(ts),
                        "tflop_per_image": flops / batch / 1e12,
                        "pct_of_peak": 100 * flops / common.median(ts) / (peak * 1e12) if peak else None,
                        "max_mem_mib": mem[n] or None, "unet_calls": unet_calls,
                    })
                    common.log(f"    {n}: {rows[-1]['it_per_s']:.2f} it/s, {img:.3f} s/image")
        del pipes, ref
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = args.name or f"generate_cuda-{label}-{device.type}"
    common.write_results(name, rows, ["dtype", "steps", "batch", "contender", "it_per_s", "s_per_image",
                                      "speedup_vs_diffusers", "tflop_per_image", "pct_of_peak", "max_mem_mib",
                                      "unet_calls"], meta)


if __name__ == "__main__":
    main()
