"""Generation time by CPU thread choice: torch's default (a thread per core), each fixed count, and
latentdiff's automatic per-call choice (latentdiff/runtime/threads.py), on the machine as it is.

    python benchmarks/cpu_threads.py                          # the shipped model, 64 px, 12 steps
    python benchmarks/cpu_threads.py --case sd15-half         # SD1.5's layout at half width (215M), 256 px
    python benchmarks/cpu_threads.py --load 2                 # plus 2 busy processes (nice 0) while timing

Every setting generates once per round, warm, the order rotated each round, so drifting load from
other jobs hits all of them. Reported per setting: the median seconds per image, its ratio to torch's
default and to the best fixed count, the threads each call ran on, the largest pixel difference from
torch's default's image; the header names the CPU (model, flags), the load average and what the
probe saw (others' busy CPUs) each round. The issue's targets: auto at most 2x torch's default on a
busy machine, within 10% of the best fixed count on an idle one. `--load N` makes the machine busy
with N spinning processes of this benchmark's own (ended when it ends); without it the load is
whatever the machine carries. OpenMP waits passively, as `latentdiff generate` sets it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARGS = None
if __name__ == "__main__":
    from support.cpu import case_parser

    ap = case_parser(__doc__, repeats=3)
    ap.add_argument("--load", type=int, default=0, help="busy processes to start while timing")
    ap.add_argument("--name", help="results file name (default: cpu_threads-CASE-CPU[-loadN])")
    ARGS = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLIs set it, before torch loads OpenMP

import numpy as np  # noqa: E402
from support import common  # noqa: E402
from support.cpu import FLAGS, cpu_flags  # noqa: E402


def case(name: str):
    """(model folder, label, size, steps, guidance)."""
    if name == "shipped":
        model, label = common.small_model(None)
        return model, label, common.native_size(model), 12, 4.0
    return common.sd15_model(width=0.5), "sd15-half-random", 256, 4, 7.5


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    import torch

    import latentdiff.runtime.threads as threads
    from latentdiff import Pipeline

    model, label, size, steps, guidance = case(ARGS.case)
    steps = ARGS.steps or steps
    pipe = Pipeline.from_pretrained(str(model), device="cpu", dtype="fp32")
    pipe.progress = False
    cores = torch.get_num_threads()
    settings = {"torch-default": None, **{f"fixed-{n}": n for n in range(1, cores + 1)}, "auto": "auto"}
    seen, images, probed, current = {}, {}, [], [None]
    real_probe = threads.probe
    threads.probe = lambda cap: probed.append(real_probe(cap)) or probed[-1]
    pipe.components.unet.register_forward_pre_hook(lambda *_: seen[current[0]].add(torch.get_num_threads()))

    def contender(name, setting):
        seen[name] = set()

        def call():
            current[0], pipe.threads = name, setting
            images[name] = pipe(common.PROMPT, steps=steps, guidance=guidance, width=size, height=size, seed=0)[0]

        return call

    meta = {**common.machine(), "cpu_flags": cpu_flags(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    meta.update(case=label, size=size, steps=steps, guidance=guidance, spinning_load_processes=ARGS.load)
    busy = spinners(ARGS.load)
    try:
        common.log(f"{label} {size}px {steps} steps, {cores} threads max, load {common.load_average()}")
        times = common.interleaved(
            {n: contender(n, s) for n, s in settings.items()},
            repeats=ARGS.repeats,
            on_round=lambda r, t: common.log(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in t.items())),
        )
    finally:
        for p in busy:
            p.kill()
            p.wait()
    meta["probe_others_busy_cpus"] = [round(s.others, 2) for s in probed]
    write(times, seen, images, meta)


def write(times: dict, seen: dict, images: dict, meta: dict) -> None:
    med = {k: common.median(v) for k, v in times.items()}
    best_fixed = min(v for k, v in med.items() if k.startswith("fixed-"))
    ref = np.asarray(images["torch-default"], dtype=int)
    rows = [
        {
            "setting": k,
            "threads": "/".join(str(n) for n in sorted(seen[k])),
            "s_per_image": med[k],
            "vs_torch_default": med[k] / med["torch-default"],
            "vs_best_fixed": med[k] / best_fixed,
            "max_px_diff": int(np.abs(np.asarray(images[k], dtype=int) - ref).max()),
            "times": [round(x, 3) for x in times[k]],
        }
        for k in times
    ]
    cpu = "-".join(meta["cpu"].lower().split()[:2]) or "cpu"
    name = ARGS.name or f"cpu_threads-{meta['case']}-{cpu}" + (f"-load{ARGS.load}" if ARGS.load else "")
    notes = (
        f"CPU flags: {', '.join(meta['cpu_flags']) or 'none of ' + ', '.join(FLAGS)}; OpenMP wait policy "
        f"{meta['omp_wait_policy']}; {ARGS.load} spinning processes of the benchmark's own; others' busy "
        f"CPUs the probe saw at each automatic call: {meta['probe_others_busy_cpus']}."
    )
    cols = ["setting", "threads", "s_per_image", "vs_torch_default", "vs_best_fixed", "max_px_diff", "times"]
    common.write_results(name, rows, cols, meta, notes=notes)


if __name__ == "__main__":
    main()
