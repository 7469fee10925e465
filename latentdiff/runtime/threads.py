"""How many intra-op CPU threads a generation runs on, chosen per call from the CPUs this process may
use (affinity, cgroup quota) and how busy the others keep them now.

`choose_threads` is the rule, a pure function a test pins with given counts; `probe` reads the
machine. Measured on a shared 2-core AMD EPYC (AVX2) with benchmarks/cpu_threads.py
(results/cpu_threads-*.md), OpenMP waits passive (what the CLIs set):
- a small UNet (the shipped model's 9M parameters) runs thousands of tiny ops, where OpenMP's
  fork/join costs more than a second core saves: 1 thread beat 2 on an idle machine (0.70 s against
  0.87 s an image) and on a busy one (load 9: 3.2 s against 5.7 s);
- a large UNet runs on the CPUs the others leave free, at least one: a thread that shares its core
  with another job stalls the rest at every barrier. With no CPU free (load 12), 1 thread and
  torch's 2 took the same time (0.96x) on SD1.5's layout at half width;
- spinning waits (OpenMP's default policy) under load made 2 threads 7.7x slower than 1 here, so the
  wait is passive whenever more than one thread runs or anyone else computes.
Work at a lower priority (a `nice`d training run) does not count: the kernel lets us run first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdiff.runtime.device import notice

SMALL_UNET_PARAMS = 50_000_000  # below this, ops are too small to split (see above)
FREE = 0.5  # a CPU others keep less than half busy is free; half a CPU of theirs makes spinning costly
STALE_S = 30.0  # an older snapshot says nothing of the load now: sample afresh
SAMPLE_S = 0.05  # the shortest window worth reading (/proc/stat counts in 10 ms ticks)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    passive: bool  # OpenMP threads should sleep, not spin, while they wait (OMP_WAIT_POLICY=PASSIVE)
    why: str


@dataclass(frozen=True)
class CpuState:
    cpus: float  # CPUs this process may use: affinity, cgroup quota and the process's own thread cap
    others: float  # CPUs kept busy now by other processes at our priority or above


def choose_threads(state: CpuState | Callable[[], CpuState], params: int) -> ThreadChoice:
    """Threads for a model (the UNet) of `params` parameters on a machine in `state` (a callable:
    probed only where the rule needs it, so a small model's call never waits for a sample)."""
    if params < SMALL_UNET_PARAMS:  # one thread never waits for another: no wait policy matters
        return ThreadChoice(1, False, f"a small model ({params / 1e6:.0f}M parameters): 1 thread")
    state = state() if callable(state) else state
    usable = max(1, int(state.cpus))  # a quota of 1.5 CPUs runs 1 thread unthrottled
    n = max(1, min(usable, int(usable - state.others + FREE)))  # a CPU at most half busy counts as free
    why = f"{n} of {usable} CPUs free ({state.others:.1f} busy with other work)"
    return ThreadChoice(n, n > 1 or state.others >= FREE, why)


# ---- the probe ----------------------------------------------------------------------------


def quota_cpus(cpu_max: str | None = None, quota_us: int | None = None, period_us: int | None = None) -> float | None:
    """CPUs a cgroup quota allows: v2's `cpu.max` text ("max 100000", "150000 100000") or v1's
    cfs quota and period (quota -1: none). None: no limit."""
    if cpu_max is not None:
        q, _, p = cpu_max.strip().partition(" ")
        quota_us, period_us = (-1 if q == "max" else int(q)), int(p or 100000)
    if quota_us is None or quota_us < 0 or not period_us:
        return None
    return quota_us / period_us


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup"), self_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota on this process's cgroup path (v2, or v1's cpu controller), None: none."""
    lines = self_cgroup if self_cgroup is not None else (_read(Path("/proc/self/cgroup")) or "")
    limits = []
    for line in lines.splitlines():
        _, controllers, path = line.split(":", 2)
        v2 = controllers == ""
        base = root if v2 else root / "cpu"
        if not v2 and "cpu" not in controllers.split(","):
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts) + 1):  # each ancestor's limit holds too
            d = base.joinpath(*parts[:depth])
            if v2:
                limits.append(quota_cpus(_read(d / "cpu.max")) if (d / "cpu.max").exists() else None)
            else:
                q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                limits.append(quota_cpus(quota_us=int(q), period_us=int(p)) if q and p else None)
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


def usable_cpus(process_threads: int) -> float:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpus()
    return min(n, process_threads, quota if quota is not None else n)


def busy_ticks(stat_line: str, count_niced: bool) -> int:
    """Busy ticks from /proc/stat's first line (user, nice, system, idle, iowait, irq, softirq,
    steal): niced time counts only where we are niced ourselves; steal is a CPU taken from us."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in stat_line.split()[1:9])
    return user + system + irq + softirq + steal + (nice if count_niced else 0)


class LoadProbe:
    """Others' busy CPUs since the last look: /proc/stat's busy time less this process's own CPU
    time, over the wall time between two snapshots. The previous call's snapshot is the start of
    the next window (its own work subtracted), so a call pays no sampling unless the last look is
    older than STALE_S or newer than SAMPLE_S. Where /proc/stat is missing, the 1-minute load average."""

    def __init__(self, stat_path: Path = Path("/proc/stat")):
        self.stat_path, self.last = stat_path, None
        self.count_niced = _own_nice() > 0

    def _snapshot(self):
        text = _read(self.stat_path)
        if not text:
            return None
        busy = busy_ticks(text.splitlines()[0], self.count_niced)
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), time.process_time()

    def others(self) -> float:
        now = self._snapshot()
        if now is None:
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if self.last is None or not SAMPLE_S <= now[0] - self.last[0] <= STALE_S:
            self.last = now
            time.sleep(SAMPLE_S)
            now = self._snapshot()
        (t0, b0, own0), (t1, b1, own1) = self.last, now
        self.last = now
        return max(0.0, ((b1 - b0) - (own1 - own0)) / max(t1 - t0, 1e-6))


def _own_nice() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


_PROBE = LoadProbe()


def probe(process_threads: int) -> CpuState:
    return CpuState(cpus=usable_cpus(process_threads), others=_PROBE.others())


def auto_threads(device_type: str) -> str | None:
    """A pipeline's thread setting on `device_type`: "auto" on the CPU, unless the user set
    OMP_NUM_THREADS (their choice, which torch already follows: kept)."""
    return "auto" if device_type == "cpu" and not os.environ.get("OMP_NUM_THREADS") else None


def threads_for_call(setting, params: int) -> int | None:
    """A pipeline's `threads` setting for one call: "auto" is chosen now; an int is kept; None leaves
    the process's count."""
    if setting != "auto":
        return setting
    return choose_threads(lambda: probe(torch.get_num_threads()), params).threads


# ---- applying a count ---------------------------------------------------------------------
# Training (finetune, train-vae; generating chooses per call: runtime/threads.py). A UNet this small
# runs its ops in microseconds, where OpenMP's fork/join costs more than a second core saves:
# measured on a shared, busy 2-core AMD EPYC with benchmarks/train_threads.py
# (results/train_threads-shipped-emoji*.md), median s/step of the shipped model, 2 threads against 1:
# 1.31x slower for LoRA and full fine-tuning, 0.98x for train-vae, with OMP_WAIT_POLICY=PASSIVE
# (what the CLI sets); 4.6x (LoRA) and 4.4x (full) slower with OpenMP's default spinning.


def cpu_threads_for(device: torch.device, params: int) -> int | None:
    """Intra-op threads for training a model of `params` parameters (the UNet; train-vae: the VAE),
    or None to keep the process's setting. An OMP_NUM_THREADS the user set is their choice (the
    shipped model's recipe trains with 2) and is kept."""
    if device.type == "cpu" and params < SMALL_UNET_PARAMS and not os.environ.get("OMP_NUM_THREADS"):
        return 1
    return None


class torch_threads:
    """Run a block with `n` intra-op threads (None: unchanged), restoring the caller's count.
    `default(m)` applies `m` later in the block (once the model's size is known) unless `n` was given."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        self._set(self.n)
        return self

    def default(self, n: int | None) -> None:
        if self.n is None:
            self._set(n)

    def _set(self, n: int | None) -> None:
        if n is not None and n != torch.get_num_threads():
            if self.old is None:
                self.old = torch.get_num_threads()
            torch.set_num_threads(n)

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
            self.old = None


def generation_threads(pipe) -> torch_threads:
    """The block runs on the threads `pipe.threads` says for its UNet of `pipe.unet_params`
    parameters ("auto": chosen now, from the machine as it is)."""
    return torch_threads(threads_for_call(pipe.threads, pipe.unet_params))


def default_training_threads(threads: torch_threads, device: torch.device, params: int) -> None:
    """cpu_threads_for's rule for a training run without --num-threads, said in one line when it
    changes the count."""
    before = torch.get_num_threads()
    threads.default(cpu_threads_for(device, params))
    if torch.get_num_threads() != before:
        notice(
            f"training on {torch.get_num_threads()} CPU thread(s), not {before}: faster for a model of "
            f"{params / 1e6:.1f}M parameters (--num-threads N to choose)"
        )
