"""CUDA throughput: latentdiff (eager and each compile mode) vs diffusers' default (SDPA eager) and
diffusers with its own documented compile recipe (channels_last + fused QKV + torch.compile of the
UNet and the VAE decode), same random weights, same seeds.

SD1.5-architecture random model at 512x512, 20 and 50 steps, batch 1 and 4, fp16 by default.
Reported per configuration: it/s (UNet evaluations per second between the end of the first and of
the last step, with a device sync only at those two points, so a contender's host/device overlap is
not broken by the measurement), seconds per image (whole call, median), the ratios to diffusers
eager and to diffusers compiled, PSNR of each contender's images against latentdiff's fp32 eager
images of the same seeds, peak CUDA memory, the FLOPs of one image (counted once on the eager
modules) and the fraction of the GPU's peak dense FLOP/s.

    python benchmarks/generate_cuda.py                                   # the full matrix on cuda
    python benchmarks/generate_cuda.py --steps 20 --batch 1 --modes reduce-overhead
    python benchmarks/generate_cuda.py --device cpu --tiny --steps 2 --batch 1 --repeats 1 --modes default
                                                                         # logic check, no GPU
STATUS: the CPU smoke run above is what was run in this repository; no CUDA figure comes from it yet.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from support import common  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Dense (no sparsity) tensor-core peaks in TFLOP/s for fp16/bf16, from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756.0
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LoopClock:
    """Synced timestamps at the end of the first and of the last denoising step only."""

    def __init__(self, device):
        self.device, self.marks, self.n = device, [], 0

    def mark(self):
        sync(self.device)
        self.marks.append(__import__("time").perf_counter())

    def ours_progress(self, _batch):
        def wrap(timesteps):
            self.marks, self.n = [], len(timesteps)
            for i, t in enumerate(timesteps):
                yield t
                if i in (0, self.n - 1):
                    self.mark()

        return wrap

    def theirs_callback(self, pipe, i, t, kwargs):
        if i == 0:
            self.marks, self.n = [], pipe.num_timesteps
        if i in (0, self.n - 1):
            self.mark()
        return kwargs

    def it_per_s(self) -> float:
        return (self.n - 1) / (self.marks[-1] - self.marks[0]) if len(self.marks) == 2 else float("nan")


def psnr(a, b) -> float:
    mse = float(((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def diffusers_compiled(model, dtype, device, mode: str):
    """diffusers' "accelerate inference" recipe, as its documentation gives it."""
    pipe = common.diffusers_pipeline(model, dtype, device=device)
    if device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        pipe.fuse_qkv_projections()
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True)
    pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, fullgraph=True)
    return pipe


def count_flops(pipe, steps, size, batch, guidance) -> float:
    with FlopCounterMode(display=False) as fc:
        pipe(common.PROMPT, steps=steps, guidance=guidance, width=size, height=size, seed=0, num_images=batch)
    return float(fc.get_total_flops())


def contenders_for(model, dt, device, modes, diffusers_mode):
    from latentdiff import Pipeline

    ours = {"latentdiff": Pipeline.from_pretrained(str(model), device=str(device), dtype=dt)}
    for mode in modes:
        ours[f"latentdiff compile={mode}"] = Pipeline.from_pretrained(
            str(model), device=str(device), dtype=dt, compile=mode
        )
    for p in ours.values():
        p.progress = False
    theirs = {"diffusers": common.diffusers_pipeline(model, DTYPES[dt], device=device)}
    if diffusers_mode != "none":
        theirs["diffusers compiled"] = diffusers_compiled(model, DTYPES[dt], device, diffusers_mode)
    return ours, theirs


def measure(ours, theirs, ref_images, steps, batch, size, args, device):
    """{name: (call seconds list, it/s list, images, peak MiB)} with interleaved repeats."""
    clocks = {n: LoopClock(device) for n in [*ours, *theirs]}
    rates = {n: [] for n in clocks}
    images, mem = {}, {n: 0.0 for n in clocks}

    def run(name):
        def call():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            clock = clocks[name]
            if name in ours:
                ours[name].progress_bar = clock.ours_progress
                out = ours[name](
                    common.PROMPT,
                    steps=steps,
                    guidance=args.guidance,
                    width=size,
                    height=size,
                    seed=0,
                    num_images=batch,
                )
            else:
                gens = [torch.Generator("cpu").manual_seed(s) for s in range(batch)]
                out = theirs[name](
                    [common.PROMPT] * batch,
                    num_inference_steps=steps,
                    guidance_scale=args.guidance,
                    height=size,
                    width=size,
                    generator=gens,
                    callback_on_step_end=clock.theirs_callback,
                ).images
            sync(device)
            rates[name].append(clock.it_per_s())
            images[name] = out
            if device.type == "cuda":
                mem[name] = max(mem[name], torch.cuda.max_memory_allocated(device) / 2**20)

        return call

    times = common.interleaved({n: run(n) for n in clocks}, repeats=args.repeats, warmup=1)
    quality = {n: min(psnr(a, b) for a, b in zip(images[n], ref_images)) for n in clocks}
    return {n: (times[n], rates[n][1:], quality[n], mem[n]) for n in clocks}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model instead of SD1.5 (dry runs)")
    ap.add_argument("--size", type=int, default=None, help="default: 512 (SD1.5) or the tiny model's 64")
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--dtype", nargs="+", default=["fp16"], choices=list(DTYPES))
    ap.add_argument(
        "--modes",
        nargs="*",
        default=["reduce-overhead", "max-autotune"],
        help="latentdiff compile modes to time (none: eager only)",
    )
    ap.add_argument(
        "--diffusers-mode",
        default="max-autotune",
        help="torch.compile mode of diffusers' recipe (its docs use max-autotune); none: skip it",
    )
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, help="peak dense FLOP/s of the device, in TFLOP/s")
    ap.add_argument("--name", help="results file name")
    args = ap.parse_args(argv)

    from latentdiff import Pipeline

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; for a logic check run with --device cpu --tiny")
    model, label = (common.tiny_model(), "tiny-sd1") if args.tiny else (common.sd15_model(), "sd15-random")
    size = args.size or common.native_size(model)
    peak = peak_tflops(device, args.peak_tflops)
    meta = common.machine()
    meta.update(
        {
            "device": str(device),
            "peak_tflops": peak,
            "repeats": args.repeats,
            "model": label,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
    )
    reference = Pipeline.from_pretrained(str(model), device=str(device), dtype="fp32")
    reference.progress = False
    rows = []
    for dt in args.dtype:
        common.log(f"{label} {size}px {dt} on {device}: loading")
        ours, theirs = contenders_for(model, dt, device, args.modes, args.diffusers_mode)
        for steps in args.steps:
            for batch in args.batch:
                ref_images = reference(
                    common.PROMPT,
                    steps=steps,
                    guidance=args.guidance,
                    width=size,
                    height=size,
                    seed=0,
                    num_images=batch,
                )
                flops = count_flops(ours["latentdiff"], steps, size, batch, args.guidance)
                common.log(f"  {steps} steps, batch {batch}: warm-up (compiles on the first call)")
                res = measure(ours, theirs, ref_images, steps, batch, size, args, device)
                base = common.median(res["diffusers"][0])
                base_c = common.median(res["diffusers compiled"][0]) if "diffusers compiled" in res else None
                for n, (ts, its, q, mem) in res.items():
                    t = common.median(ts)
                    rows.append(
                        {
                            "dtype": dt,
                            "steps": steps,
                            "batch": batch,
                            "contender": n,
                            "it_per_s": common.median(its),
                            "s_per_image": t / batch,
                            "vs_diffusers": base / t,
                            "vs_diffusers_compiled": base_c / t if base_c else None,
                            "psnr_vs_fp32_db": q,
                            "tflop_per_image": flops / batch / 1e12,
                            "pct_of_peak": 100 * flops / t / (peak * 1e12) if peak else None,
                            "max_mem_mib": mem or None,
                        }
                    )
                    common.log(f"    {n}: {rows[-1]['it_per_s']:.2f} it/s, {t / batch:.3f} s/image, PSNR {q:.1f} dB")
        del ours, theirs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = args.name or f"generate_cuda-{label}-{device.type}"
    common.write_results(
        name,
        rows,
        [
            "dtype",
            "steps",
            "batch",
            "contender",
            "it_per_s",
            "s_per_image",
            "vs_diffusers",
            "vs_diffusers_compiled",
            "psnr_vs_fp32_db",
            "tflop_per_image",
            "pct_of_peak",
            "max_mem_mib",
        ],
        meta,
    )


if __name__ == "__main__":
    main()
