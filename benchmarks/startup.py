"""Start-up before and after a change: `latentdiff --help`, `latentdiff generate --help` and a one-step
`latentdiff generate` on the shipped model, each in a fresh process, with a reference commit's code and
with the working tree, alternating (A B, B A, ...), on the same machine in one run.

    python benchmarks/startup.py [--before REV] [--repeats 7]

The reference tree is the git worktree that layout_pixels.py makes (under $LATENTDIFF_BENCH_CACHE);
each side runs with PYTHONPATH set to its own tree. Prints medians (s) and ratios after/before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout_pixels import BEFORE, CACHE, ROOT  # noqa: E402

CASES = {
    "--help": ["--help"],
    "generate --help": ["generate", "--help"],
    "generate, 1 step": ["generate", "grinning face", "--steps", "1", "--quiet", "--no-upscale"],
}


def tree_of(ref: str) -> Path:
    sha = subprocess.check_output(["git", "rev-parse", ref + "^{commit}"], cwd=ROOT, text=True).strip()
    tree = CACHE / f"tree-{sha[:10]}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True)
    return tree


def timed(tree: Path, argv: list[str], out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    extra = ["--out", str(out)] if argv[0] == "generate" and "--help" not in argv else []
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "latentdiff.cli", *argv, *extra],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=BEFORE, help="reference commit (default: the one before issue 23's move)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    sides = {"before": tree_of(args.before), "after": ROOT}
    print(f"machine: {os.cpu_count()} cores; before: {args.before}; after: working tree; {args.repeats} repeats\n")
    print("| command | before median (s) | after median (s) | after/before |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for argv in CASES.values():
            times = {"before": [], "after": []}
            for i in range(args.repeats + 1):  # the first round warms the file cache and is dropped
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for side in order:
                    t = timed(sides[side], argv, Path(tmp) / side)
                    if i:
                        times[side].append(t)
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"| `latentdiff {' '.join(argv)}` | {b:.3f} | {a:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
