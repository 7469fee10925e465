"""What a CPU benchmark says about the machine: the CPU's vector flags, the cgroup's CPU quota."""

from __future__ import annotations

import argparse
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_flags() -> list[str]:
    """The flags of FLAGS that /proc/cpuinfo lists (the ones that decide fp32/bf16/int8 kernels)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in FLAGS if f in have]


def cpu_description() -> dict:
    """Flags, the cgroup's CPU quota (None: no limit) and the CPUs this process may run on."""
    import os

    from latentdiff.runtime.threads import cgroup_cpus

    return {"cpu_flags": cpu_flags(), "cgroup_cpus": cgroup_cpus(), "affinity_cpus": len(os.sched_getaffinity(0))}


def case_parser(doc: str, repeats: int, steps: bool = True) -> argparse.ArgumentParser:
    """The flags the CPU benchmarks share: which model (`--case`), its steps, the timed rounds."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["shipped", "sd15-half"], default="shipped")
    if steps:
        ap.add_argument("--steps", type=int, help="denoising steps (default: 12 shipped, 4 sd15-half)")
    ap.add_argument("--repeats", type=int, default=repeats, help="timed rounds")
    return ap
