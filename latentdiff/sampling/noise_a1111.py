"""AUTOMATIC1111 1.10's noise: its three sources and its seed rules (read in its modules/rng.py and
processing.py for behaviour; our code).

Sources (A1111's "Random number generator source" setting, the infotext's "RNG"):
- "cpu": torch's CPU generator, `torch.Generator("cpu").manual_seed(seed)`;
- "gpu": torch's generator on the CUDA device (A1111's default): needs a CUDA device;
- "nv": the numbers CUDA's `torch.randn` gives, computed on any device: counter-based Philox4x32-10
  (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; the Random123 constants) with
  Box-Muller, one counter per element as torch's CUDA kernel assigns them.

Seed rules (A1111's ImageRNG): image k's noise is drawn from its own generator; with a variation seed
("subseed") of strength s, the noise is the slerp from the seed's noise to the variation seed's;
with "seed resize from" (w, h), the noise is drawn at that size and pasted centred into noise of the
image's size. After the initial noise the same generator goes on to give the sampler's noise, or,
with an ENSD ("eta noise seed delta"), a generator seeded seed + ENSD does.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from latentdiff.errors import UsageError
from latentdiff.sampling.noise_request import RNG_SOURCES, NoiseSettings, image_seeds  # noqa: F401 (re-exported)

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # Philox4x32 multipliers
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)  # Weyl key increments (golden ratio, sqrt(3) - 1)
_LOW = np.uint64(0xFFFFFFFF)
# curand's Box-Muller constants: 2**-32 and 2**-32 * 2pi as float32 (the products are taken in float64,
# as numpy promotes uint32 * float32, which is what gives CUDA's float32 results bit for bit)
_INV32 = np.float32(2.3283064e-10)
_INV32_2PI = np.float32(2.3283064e-10 * 6.2831855)


def philox4x32_10(counter: list[np.ndarray], key: tuple[int, int]) -> list[np.ndarray]:
    """Ten Philox rounds over uint32 counter words (c0, c1, c2, c3) with the key (k0, k1)."""
    c0, c1, c2, c3 = counter
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    for r in range(10):
        if r:
            k0, k1 = np.uint32((int(k0) + int(_W0)) & 0xFFFFFFFF), np.uint32((int(k1) + int(_W1)) & 0xFFFFFFFF)
        p0 = c0.astype(np.uint64) * _M0
        p1 = c2.astype(np.uint64) * _M1
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & _LOW).astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & _LOW).astype(np.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


class Philox:
    """A generator giving, for a seed, the numbers `torch.manual_seed(seed); torch.randn(shape,
    device="cuda")` gives, then those of the next `torch.randn` call of the same generator, and so on."""

    def __init__(self, seed: int):
        seed = int(seed) % 2**64
        self.key = (seed & 0xFFFFFFFF, seed >> 32)
        self.offset = 0

    def randn(self, shape) -> torch.Tensor:
        n = int(np.prod(shape))
        counter = [
            np.full(n, self.offset, dtype=np.uint32),
            np.zeros(n, dtype=np.uint32),
            np.arange(n, dtype=np.uint32),  # element i: subsequence i
            np.zeros(n, dtype=np.uint32),
        ]
        self.offset += 1
        x, y = philox4x32_10(counter, self.key)[:2]
        u = x * _INV32 + _INV32 / 2  # (0, 1]: never log(0)
        v = y * _INV32_2PI + _INV32_2PI / 2
        return torch.from_numpy((np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(tuple(shape)))


class TorchSource:
    """torch's own generator on `device` ("cpu" or "cuda")."""

    def __init__(self, seed: int, device: str):
        self.device = device
        self.generator = torch.Generator(device).manual_seed(int(seed))

    def randn(self, shape) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device)


def check_rng(rng: str) -> str:
    """`rng` as one of RNG_SOURCES (any case; A1111's "CPU"/"GPU"/"NV" too); UsageError otherwise, and
    for "gpu" where torch sees no CUDA device."""
    key = str(rng).strip().lower()
    if key not in RNG_SOURCES:
        raise UsageError(f"unknown rng {rng!r}; choose one of: {', '.join(RNG_SOURCES)}")
    if key == "gpu" and not torch.cuda.is_available():
        raise UsageError("rng 'gpu' needs a CUDA device; rng 'nv' gives the same numbers on any device")
    return key


def generator(rng: str, seed: int):
    """A source of `rng`'s kind seeded `seed`: `.randn(shape)` -> fp32 tensor."""
    if rng == "nv":
        return Philox(seed)
    return TorchSource(seed, "cuda" if rng == "gpu" else "cpu")


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation from `low` to `high` (C, h, w), as it computes it: the angle is
    taken per channel and column (norms over dim 1), and nearly parallel noises are mixed
    linearly with the weights the other way round (low * t + high * (1 - t)), A1111's own rule."""
    low_n = low / torch.norm(low, dim=1, keepdim=True)
    high_n = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_n * high_n).sum(1)
    if dot.mean() > 0.9995:
        return low * t + high * (1 - t)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


def paste_centred(small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
    """`small` (C, h0, w0) over the centre of `big` (C, h, w), cropped where it is larger (A1111's
    seed resize)."""
    dy, dx = (big.shape[1] - small.shape[1]) // 2, (big.shape[2] - small.shape[2]) // 2
    h = small.shape[1] if dy >= 0 else small.shape[1] + 2 * dy
    w = small.shape[2] if dx >= 0 else small.shape[2] + 2 * dx
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    out = big.clone()
    out[:, ty : ty + h, tx : tx + w] = small[:, sy : sy + h, sx : sx + w]
    return out


class ImageNoise:
    """A1111's noise for one batch: `first()` the initial noise (B, C, h, w), then `next()` each
    further draw of the sampler, row k from image k's own generator (so an image does not depend on
    the batch it was made in)."""

    def __init__(self, shape, seeds: list[int], subseeds: list[int] | None, settings: NoiseSettings, device):
        self.shape, self.seeds, self.subseeds, self.s = tuple(shape), list(seeds), subseeds, settings
        self.device = device
        self.sources = [generator(settings.rng, seed) for seed in self.seeds]

    def _noise_shape(self) -> tuple[int, ...]:
        r = self.s.resize_from
        if not r or r[0] <= 0 or r[1] <= 0:
            return self.shape
        return (self.shape[0], r[1] // self.s.scale_factor, r[0] // self.s.scale_factor)

    def _one(self, k: int, shape) -> torch.Tensor:
        seed, source = self.seeds[k], self.sources[k]
        # A1111 draws resized noise from a fresh generator of the seed, then the full-size noise
        # from the image's own; without a resize only the image's own draws.
        noise = generator(self.s.rng, seed).randn(shape) if shape != self.shape else source.randn(shape)
        if self.subseeds is not None and self.s.variation_strength:
            sub = self.subseeds[k] if k < len(self.subseeds) else 0
            noise = slerp(self.s.variation_strength, noise.cpu(), generator(self.s.rng, sub).randn(shape).cpu())
        if shape != self.shape:
            noise = paste_centred(noise.cpu(), source.randn(self.shape).cpu())
        return noise.cpu()

    def first(self) -> torch.Tensor:
        shape = self._noise_shape()
        noise = torch.stack([self._one(k, shape) for k in range(len(self.seeds))])
        if self.s.ensd:
            self.sources = [generator(self.s.rng, seed + self.s.ensd) for seed in self.seeds]
        return noise.to(self.device)

    def next(self) -> torch.Tensor:
        return torch.stack([src.randn(self.shape).cpu() for src in self.sources]).to(self.device)


@contextmanager
def cuda_numbers_in_brownian_trees():
    """While inside: torchsde's Brownian trees draw CUDA's numbers for their seeds (Philox), on any device.
    A1111 builds the SDE samplers' trees on the model's device, so on an NVIDIA GPU they hold CUDA's
    numbers whatever its RNG setting; with rng "nv" or "cpu" we draw those. torchsde draws every tree value through
    one module function, `_randn(size, dtype, device, seed)` (a fresh generator per seed), which is
    replaced for the duration: not for threads sampling with torchsde alongside."""
    from torchsde._brownian import brownian_interval

    own = brownian_interval._randn

    def randn(size, dtype, device, seed):
        return Philox(seed).randn(size).to(device=device, dtype=dtype)

    brownian_interval._randn = randn
    try:
        yield
    finally:
        brownian_interval._randn = own
