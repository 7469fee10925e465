"""Flux.1 on this CPU: seconds per denoising step and peak RSS, and how they scale to the release.

Two cases (random weights, nothing downloaded):

- `tiny`: the tests' tiny Flux dev folder through latentdiff.Pipeline end to end (text encoders,
  loop, decode); seconds per step from the step callback, peak RSS of the process.
- `reduced`: FluxTransformer2DModel at the released width (24 heads x 128, T5 context 4096, CLIP
  pooled 768, guidance embedding) but 1 double-stream and 1 single-stream block instead of 19 and
  38, called as the loop calls it at --size (512 T5 tokens). Forward hooks time each block, so a
  step of the released 12B transformer is estimated as 19 x double + 38 x single + the rest;
  weights: the measured block sizes times the released block counts.

    python benchmarks/flux_cpu.py --case tiny
    python benchmarks/flux_cpu.py --case reduced --size 512 --dtype bf16 --steps 2

Timings on a shared machine are upper bounds: read the load average printed with them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

RELEASED = {"double": 19, "single": 38}  # black-forest-labs/FLUX.1-dev transformer/config.json
GIB = 1024**3


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB


def tiny(args, variant: str = "flux-dev") -> dict:
    """The tests' tiny model of `variant` through latentdiff.Pipeline: median seconds per step, peak RSS."""
    from latentdiff import Pipeline
    from latentdiff.models.testing import make_tiny

    with tempfile.TemporaryDirectory() as d:
        path = make_tiny(Path(d) / "model", variant)
        pipe = Pipeline.from_pretrained(path, device="cpu", dtype=args.dtype)
        pipe.progress = False
        ends = []
        kwargs = dict(steps=args.steps, width=args.size, height=args.size, seed=0)
        pipe("a red apple", **kwargs)  # warm-up
        pipe("a red apple", callback=lambda i, n, x: ends.append(time.perf_counter()), **kwargs)
    per_step = [b - a for a, b in zip(ends, ends[1:])]
    return {"s_per_step": sorted(per_step)[len(per_step) // 2], "peak_rss_gib": peak_rss_gib()}


def reduced(args) -> dict:
    from diffusers import FluxTransformer2DModel

    from latentdiff.families.flux import FluxCall, FluxContext
    from latentdiff.sampling.model_call import Inputs

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True).to(dtype).eval()
    blocks = {"double": model.transformer_blocks[0], "single": model.single_transformer_blocks[0]}
    side = args.size // 8  # the released VAE's factor
    x = torch.randn(1, 16, side, side, dtype=dtype)
    context = FluxContext(torch.randn(1, 512, 4096, dtype=dtype), torch.randn(1, 768, dtype=dtype))
    call, t = FluxCall(model, 3.5), torch.tensor(500.0)
    timed = scaled_to_release(model, blocks, RELEASED, lambda: call(x, t, Inputs(context)), args.steps, dtype)
    return {"tokens": (side // 2) ** 2 + 512, **timed}


def _median(values: list) -> float:
    return sorted(values)[len(values) // 2]


def scaled_to_release(model, blocks: dict, counts: dict, run, steps: int, dtype) -> dict:
    """Time `run()` (one call of `model`) steps + 1 times, the first a warm-up, with forward hooks
    timing each of `blocks` (name -> block); then estimate a step and the weights of the released
    model from the blocks' times and sizes times their released `counts` (name -> how many), plus
    what lies outside the blocks."""
    times = {k: [] for k in blocks}
    for name, block in blocks.items():
        block.register_forward_pre_hook(lambda m, a, n=name: times[n].append(-time.perf_counter()))
        block.register_forward_hook(
            lambda m, a, o, n=name: times[n].__setitem__(-1, times[n][-1] + time.perf_counter())
        )
    durations = []
    with torch.no_grad():
        for _ in range(steps + 1):
            start = time.perf_counter()
            run()
            durations.append(time.perf_counter() - start)
    med = {k: _median(v[1:]) for k, v in times.items()}
    step = _median(durations[1:])
    params = {k: sum(p.numel() for p in b.parameters()) for k, b in blocks.items()}
    other = sum(p.numel() for p in model.parameters()) - sum(params.values())
    released_params = sum(counts[k] * params[k] for k in counts) + other
    return {
        "s_per_step": step,
        **{f"s_{k}_block": v for k, v in med.items()},
        "estimated_released_s_per_step": sum(counts[k] * med[k] for k in counts) + step - sum(med.values()),
        "released_transformer_params_billion": released_params / 1e9,
        "released_weights_gib": released_params * dtype.itemsize / GIB,
        "peak_rss_gib": peak_rss_gib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("tiny", "reduced"), default="tiny")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (tiny 64, reduced 512)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    args.size = args.size or (64 if args.case == "tiny" else 512)
    report(args, (tiny if args.case == "tiny" else reduced)(args))


def report(args, out: dict, **case) -> None:
    """One line: the case, its settings, the threads and load average the timings ran under, `out`."""
    settings = {"case": args.case, **case, "size": args.size, "dtype": args.dtype}
    print({**settings, "threads": torch.get_num_threads(), "load": os.getloadavg()[0], **out})


if __name__ == "__main__":
    main()
