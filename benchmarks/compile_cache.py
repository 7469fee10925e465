"""`generate --compile` paid once per machine: what a fresh process costs with an empty compile
cache, then with the cache the first one left on disk, against a plain eager process.

Each contender is a whole `latentdiff generate` process (imports, loading, compiling, sampling,
PNG, exit), timed from spawn to exit. The compiled processes share one TORCHINDUCTOR_CACHE_DIR
(inductor's FX graph cache and AOTAutograd's cache live there) that starts empty: run 1 compiles,
runs 2.. should mostly read the cache. Issue 13's target: a second compiled process adds
<= 15 s over eager.

    python benchmarks/compile_cache.py                       # shipped model, CPU, default mode
    python benchmarks/compile_cache.py --device cuda --sd15 --size 512 --dtype fp16 --mode reduce-overhead
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder (default: the shipped model, else the tiny test model)")
    ap.add_argument("--sd15", action="store_true", help="the SD1.5-architecture random model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, help="image size (default: the model's native size)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--mode", default="auto", help="the --compile mode (auto, default, reduce-overhead, ...)")
    ap.add_argument("--eager-runs", type=int, default=3)
    ap.add_argument("--cached-runs", type=int, default=3, help="compiled processes after the first one")
    ap.add_argument("--name", help="results file name")
    args = ap.parse_args(argv)

    model, label = (common.sd15_model(), "sd15-random") if args.sd15 else common.small_model(args.model)
    size = args.size or common.native_size(model)
    work = Path(tempfile.mkdtemp(prefix="ld-compile-cache-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO_ROOT), env.get("PYTHONPATH", "")])
    base = [sys.executable, "-m", "latentdiff.cli"] + [
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
        args.device,
        "--seed",
        "0",
        "--quiet",
    ]
    compiled = base + ["--compile-mode", args.mode]

    def run(name: str, cmd: list[str]) -> float:
        wall, peak, code, tail = common.run_child(cmd + ["--out", str(work / name)], env=env, cwd=str(common.REPO_ROOT))
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}):\n{tail}")
        common.log(f"{name}: {wall:.1f} s, peak RSS {peak:.0f} MiB")
        return wall

    meta = common.machine()
    common.log(f"{label} {size}px, {args.steps} steps, {args.device} {args.dtype}, --compile {args.mode}")
    run("warm-page-cache", base)
    first = run("compiled-first", compiled)
    eager, cached = [], []
    for i in range(max(args.eager_runs, args.cached_runs)):  # interleaved: load drifts alike for both
        if i < args.eager_runs:
            eager.append(run(f"eager-{i}", base))
        if i < args.cached_runs:
            cached.append(run(f"compiled-cached-{i}", compiled))
    shutil.rmtree(work, ignore_errors=True)
    e = common.median(eager)
    rows = [
        {"contender": "eager", "median_s": e, "runs": len(eager), "over_eager_s": 0.0, "ratio_vs_eager": 1.0},
        {
            "contender": "compiled, empty cache",
            "median_s": first,
            "runs": 1,
            "over_eager_s": first - e,
            "ratio_vs_eager": first / e,
        },
        {
            "contender": "compiled, cache on disk",
            "median_s": common.median(cached),
            "runs": len(cached),
            "over_eager_s": common.median(cached) - e,
            "ratio_vs_eager": common.median(cached) / e,
        },
    ]
    meta.update(
        {
            "model": label,
            "size": size,
            "steps": args.steps,
            "device": args.device,
            "dtype": args.dtype,
            "mode": args.mode,
            "eager_s": eager,
            "cached_s": cached,
            "first_s": first,
            "cmd": " ".join(compiled),
        }
    )
    name = args.name or f"compile_cache-{label}-{args.device}-{args.mode}"
    common.write_results(
        name,
        rows,
        ["contender", "median_s", "runs", "over_eager_s", "ratio_vs_eager"],
        meta,
        notes="Target (issue 13): the cached compiled process adds <= 15 s over eager.",
    )


if __name__ == "__main__":
    main()
