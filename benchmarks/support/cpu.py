"""What a CPU benchmark says about the machine: the CPU's vector flags, the cgroup's CPU quota."""

from __future__ import annotations

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
