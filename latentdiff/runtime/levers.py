"""`--speed auto|off|LEVER,...`: which of a CPU's speed and memory levers a generation uses.

`choose_levers` is the rule, a pure function of the CPU's features, the UNet's size and how many
UNet calls the process expects, pinned by a table test (tests/runtime/test_levers.py); `cpu_features`
reads the CPU. Each lever states how close its images stay to the fp32 default layout's
(`STATED_PSNR`, dB, checked on a tiny model by the same test; docs/performance.md quotes it). What
each lever was worth is measured by benchmarks/cpu_levers.py (results/cpu_levers-*.md):
- bf16: only where the CPU computes it natively (AMX or AVX-512 BF16) and the UNet is large enough
  to earn back the conversions: the same rule `--dtype auto` follows (runtime/placement.py), so
  `--speed` never overrides a dtype the user chose. Emulated bf16 (AVX-512 without BF16, AVX2) was
  many times slower than fp32;
- channels_last for the fp32 UNet: 0.96-1.01 of the default layout's time on a 2-core AVX2 EPYC
  (results/channels_last_cpu-*, cpu_levers-*), so no CPU kind takes it automatically; in bf16 the
  UNet is channels_last already (runtime/device.py), and the fp32 VAE always;
- compile (inductor; weights frozen in bf16): a per-process cost of tens of seconds even with the disk
  cache (minutes the first time) against ~1.8x per UNet call in bf16 on AMX and ~0.9x in fp32, so
  only where the expected calls repay it (`COMPILE_PAYS_AFTER`);
- int8: weight-only int8 (runtime/int8.py), a memory lever (a quarter of the weights' bytes for the
  layers it covers) that costs time on every CPU; opt-in only (`--speed auto,int8`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import UsageError

LEVERS = ("bf16", "channels-last", "compile", "int8")
# Images stay within this PSNR (dB) of the fp32 default-layout image (tiny random SD1 model,
# tests/runtime/test_levers.py; benchmarks/cpu_levers.py measures the real models).
STATED_PSNR = {"bf16": 30.0, "channels-last": 50.0, "compile": 40.0, "int8": 25.0}
# Below this UNet size bf16's conversions cost more than its faster matmuls save (placement.py).
BF16_MIN_PARAMS = 50_000_000
# UNet calls (steps x batches) after which compiling pays, by (native bf16, large UNet): compile
# costs ~13-20 s per process with the cache warm (benchmarks/compile_cache.py); frozen bf16 calls
# on AMX took ~0.55x of eager, fp32 calls ~0.9x (shipped model, 0.05 s a call: ~3,000 calls).
COMPILE_PAYS_AFTER = {(True, True): 40, (True, False): 3000, (False, True): 400, (False, False): 3000}
MANY_CALLS = 10**6  # a server: it runs as long as it is asked to


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU computes natively, from its /proc/cpuinfo flags (torch's capability where none)."""

    amx: bool = False  # AMX tiles: bf16 and int8 matrix multiply (Sapphire Rapids and later)
    avx512_bf16: bool = False
    avx512_vnni: bool = False  # int8 dot products (Cascade Lake and later; Zen 4)
    avx512: bool = False
    avx2: bool = False

    @property
    def native_bf16(self) -> bool:
        return self.amx or self.avx512_bf16

    @property
    def kind(self) -> str:
        names = (("amx", self.amx), ("avx512-bf16", self.avx512_bf16), ("avx512-vnni", self.avx512_vnni))
        names += (("avx512", self.avx512), ("avx2", self.avx2))
        return next((n for n, on in names if on), "baseline")

    @classmethod
    def from_flags(cls, flags) -> "CpuFeatures":
        f = set(flags)
        return cls(
            amx="amx_bf16" in f or "amx_tile" in f,
            avx512_bf16="avx512_bf16" in f,
            avx512_vnni="avx512_vnni" in f,
            avx512="avx512f" in f,
            avx2="avx2" in f,
        )


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> CpuFeatures:
    """This CPU's features: /proc/cpuinfo's flags, else torch's dispatch capability (no /proc)."""
    try:
        text = Path(cpuinfo).read_text()
        line = next(x for x in text.splitlines() if x.startswith(("flags", "Features")))
        return CpuFeatures.from_flags(line.split(":", 1)[1].split())
    except (OSError, StopIteration, IndexError):
        import torch

        cap = torch.backends.cpu.get_cpu_capability()
        return CpuFeatures(avx512=cap.startswith("AVX512"), avx2=cap in ("AVX2",) or cap.startswith("AVX512"))


@dataclass(frozen=True)
class Levers:
    bf16: bool = False
    channels_last: bool = False  # the UNet's convolutions in NHWC (the fp32 VAE is so already)
    compile: bool = False
    int8: bool = False

    @property
    def names(self) -> list[str]:
        on = (self.bf16, self.channels_last, self.compile, self.int8)
        return [name for name, yes in zip(LEVERS, on) if yes]

    def describe(self) -> str:
        return ",".join(self.names) or "none"


def bf16_pays(features: CpuFeatures, unet_params: int | None) -> bool:
    """bf16 for a UNet of `unet_params` (None: unknown, a pickle file) on `features`: native only."""
    return features.native_bf16 and (unet_params is None or unet_params >= BF16_MIN_PARAMS)


def choose_levers(features: CpuFeatures, unet_params: int, calls: int | None) -> Levers:
    """The levers that measured faster for a UNet of `unet_params` on `features` when the process
    expects `calls` UNet calls (None: not known, so nothing whose cost must be repaid)."""
    bf16 = bf16_pays(features, unet_params)
    large = unet_params >= BF16_MIN_PARAMS
    pays = calls is not None and calls >= COMPILE_PAYS_AFTER[(bf16, large)]
    return Levers(bf16=bf16, channels_last=False, compile=pays, int8=False)


@dataclass(frozen=True)
class Speed:
    """A parsed `--speed`: `auto` (choose_levers) and the levers named beside or instead of it."""

    auto: bool = False
    named: frozenset = frozenset()

    @property
    def off(self) -> bool:
        return not self.auto and not self.named

    @property
    def text(self) -> str:
        """As `--speed` takes it: off, auto, or the words joined by commas (auto first)."""
        words = (["auto"] if self.auto else []) + [w for w in LEVERS if w in self.named]
        return ",".join(words) or "off"


def parse_speed(value) -> Speed:
    """`--speed` as given: auto, off, or levers joined by commas (`auto,int8`, `channels-last,compile`)."""
    if value is None or value is False:
        return Speed()
    if isinstance(value, Speed):
        return value
    if value is True:
        return Speed(auto=True)
    if not isinstance(value, str):
        raise UsageError(f"speed must be auto, off or levers joined by commas, got {value!r}")
    words = [w.strip().lower().replace("_", "-") for w in value.split(",")]
    unknown = [w for w in words if w not in (*LEVERS, "auto", "off")]
    if unknown or not words or ("off" in words and len(words) > 1):
        raise UsageError(f"unknown speed {value!r}; use auto, off, or any of {', '.join(LEVERS)} joined by commas")
    if "bf16" in words:
        raise UsageError("bf16 is a precision: use --dtype bf16 (--dtype auto takes it where the CPU computes it)")
    return Speed(auto="auto" in words, named=frozenset(w for w in words if w not in ("auto", "off")))


def levers_for(speed: Speed, features: CpuFeatures, unet_params: int, calls: int | None, bf16: bool) -> Levers:
    """What a pipeline whose compute dtype is bf16 (`bf16`) runs with under `speed`."""
    auto = choose_levers(features, unet_params, calls) if speed.auto else Levers()
    return Levers(
        bf16=bf16,
        channels_last=auto.channels_last or "channels-last" in speed.named,
        compile=auto.compile or "compile" in speed.named,
        int8=auto.int8 or "int8" in speed.named,
    )


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR (dB) of two images as arrays of the same shape (uint8 or float in 0..`peak`)."""
    import numpy as np

    err = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if err == 0 else 10 * math.log10(peak**2 / err)
