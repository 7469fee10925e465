"""Each CPU lever of `--speed` (latentdiff/runtime/levers.py) alone and together against plain fp32, in
one run: one pipeline, one UNet copy per setting (made by the same functions `--speed` uses), whole
warm generations taking turns (order rotated each round), medians and spread, the load average per
round, each image's PSNR against the fp32 image, and the UNet's weight bytes per setting.

    python benchmarks/cpu_levers.py                          # the shipped model, 64 px, 12 steps
    python benchmarks/cpu_levers.py --case sd15-half         # SD1.5's layout at half width (215M), 256 px
    python benchmarks/cpu_levers.py --compile                # also torch.compile (minutes of compiling first)

bf16 runs only where the CPU computes it natively (AMX, AVX-512 BF16) unless --bf16 forces it: emulated
bf16 was many times slower than fp32 (docs/performance.md). The `auto` row names what `--speed auto`
chooses here for this run's calls and for a server's; where that is a setting timed already, it is not
timed twice. OpenMP waits passively and threads are chosen per call, as `latentdiff generate` does.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARGS = None
if __name__ == "__main__":
    from support.cpu import case_parser

    ap = case_parser(__doc__, repeats=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (alone and with the others)")
    ap.add_argument("--bf16", action="store_true", help="time bf16 even where the CPU only emulates it")
    ap.add_argument("--name", help="results file name (default: cpu_levers-CASE-CPU)")
    ARGS = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLIs set it, before torch loads OpenMP

import numpy as np  # noqa: E402
from cpu_threads import case, cpu_flags  # noqa: E402
from support import common  # noqa: E402


def unet_bytes(unet) -> int:
    return sum(t.numel() * t.element_size() for t in (*unet.parameters(), *unet.buffers()))


def settings(pipe, bf16: bool, compile: bool) -> dict:
    """{name: (UNet, its dtype)} made by the functions --speed uses (runtime/speed.py)."""
    import torch

    from latentdiff.runtime.device import use_channels_last
    from latentdiff.runtime.int8 import quantize_weights

    base = pipe.components.unet
    out = {"fp32": base}
    out["channels-last"] = copy.deepcopy(base)
    use_channels_last(out["channels-last"])
    out["int8"] = copy.deepcopy(base)
    quantize_weights(out["int8"])
    both = copy.deepcopy(out["int8"])
    use_channels_last(both)
    out["channels-last+int8"] = both
    if bf16:
        out["bf16"] = copy.deepcopy(base).to(torch.bfloat16)
        use_channels_last(out["bf16"])
    if compile:
        for name in list(out):
            if name in ("fp32", "int8") or (bf16 and name == "bf16"):
                compiled = copy.deepcopy(out[name])
                compiled.compile()
                out[f"{name}+compile"] = compiled
    return out


def main() -> None:
    import torch

    from latentdiff import Pipeline
    from latentdiff.runtime.device import cpu_bf16
    from latentdiff.runtime.levers import cpu_features

    model, label, size, steps, guidance = case(ARGS.case)
    steps = ARGS.steps or steps
    pipe = Pipeline.from_pretrained(str(model), device="cpu", dtype="fp32")
    pipe.progress = False
    bf16 = cpu_bf16().native or ARGS.bf16
    unets = settings(pipe, bf16, ARGS.compile)
    meta = {**common.machine(), "flags": cpu_flags(), "kind": cpu_features().kind, "model": label}
    meta.update(size=size, steps=steps, guidance=guidance, unet_params=pipe.unet_params, loads=[])
    images = {}

    def contender(name):
        def call():
            pipe.components.unet = unets[name]
            pipe.dtype = unets[name].dtype  # the loop's latents follow the UNet's dtype
            images[name] = np.asarray(pipe("a red apple", steps=steps, guidance=guidance, seed=0)[0])

        return call

    calls = {name: contender(name) for name in unets}

    def after_round(r, times):  # the table after every round: a stopped run keeps what it measured
        meta["loads"].append(common.load_average())
        write(times, images, unets, meta, pipe.unet_params, bf16)

    common.interleaved(calls, repeats=ARGS.repeats, on_round=after_round)
    pipe.components.unet, pipe.dtype = unets["fp32"], torch.float32


def write(times: dict, images: dict, unets: dict, meta: dict, unet_params: int, bf16: bool) -> None:
    from latentdiff.runtime.levers import MANY_CALLS, choose_levers, cpu_features, psnr

    base = common.median(times["fp32"])
    rows = [
        {
            "setting": name,
            "median_s": common.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "vs_fp32": common.median(ts) / base,
            "psnr_db": psnr(images[name], images["fp32"]),
            "unet_mb": unet_bytes(unets[name]) / 2**20,
        }
        for name, ts in times.items()
    ]
    run_calls = meta["steps"] * (ARGS.repeats + 1)
    for what, n in (("this run", run_calls), ("a server", MANY_CALLS)):
        meta[f"auto_for_{what.replace(' ', '_')}"] = choose_levers(cpu_features(), unet_params, n).describe()
    skipped = "" if bf16 else "bf16 not timed: this CPU does not compute bf16 natively (--bf16 forces it). "
    notes = (
        f"{skipped}--speed auto here: {meta['auto_for_this_run']} for this run's {run_calls} image-steps, "
        f"{meta['auto_for_a_server']} for a server. Rounds done: {len(times['fp32'])} of {ARGS.repeats}; "
        f"load average after each: {meta['loads']}. CPU kind {meta['kind']}, flags {' '.join(meta['flags'])}."
    )
    name = ARGS.name or f"cpu_levers-{ARGS.case}-{meta['kind']}"
    columns = ["setting", "median_s", "min_s", "max_s", "vs_fp32", "psnr_db", "unet_mb"]
    common.write_results(name, rows, columns, meta, notes=notes)


if __name__ == "__main__":
    main()
