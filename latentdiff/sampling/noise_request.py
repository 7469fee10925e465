"""A call's choice of A1111's noise, torch-free (the CLI's --help and the server's schema name it
without loading torch; sampling/noise_a1111.py draws the numbers)."""

from __future__ import annotations

from dataclasses import dataclass

RNG_SOURCES = ("cpu", "gpu", "nv")


def image_seeds(seed: int, n: int, variation_seed: int | None = None, strength: float = 0.0):
    """(seeds, variation seeds) of n images as A1111 numbers them: the seeds count up from `seed`, or
    all stay `seed` when a variation strength is set (then the variation seeds count up)."""
    seeds = [seed + (k if not strength else 0) for k in range(n)]
    subs = None if variation_seed is None else [variation_seed + k for k in range(n)]
    return seeds, subs


@dataclass
class NoiseSettings:
    """What decides A1111's noise besides the seeds (all recorded in the infotext)."""

    rng: str = "cpu"
    variation_strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (width, height) in pixels
    ensd: int = 0
    scale_factor: int = 8


@dataclass(frozen=True)
class NoiseRequest:
    """A call's choice of A1111's noise (and with it A1111's sampling path), checked."""

    rng: str = "cpu"
    variation_seed: int | None = None
    variation_strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (width, height) pixels; None: off
    ensd: int = 0

    def seeds(self, first: int, k: int) -> tuple[int, int | None]:
        """(seed, variation seed) of image k of a call whose first seed is `first` (image_seeds)."""
        seeds, subs = image_seeds(first, k + 1, self.variation_seed, self.variation_strength)
        return seeds[k], None if subs is None else subs[k]

    def settings(self, scale_factor: int) -> NoiseSettings:
        return NoiseSettings(self.rng, self.variation_strength, self.resize_from, self.ensd, scale_factor)

    def record(self, first: int, seed: int) -> dict:
        """What an image of seed `seed` (a call's first seed + k) records: A1111's seed for it and the
        noise settings (infotext: images/noise_infotext.py)."""
        a1111_seed, variation = self.seeds(first, seed - first)
        return {
            "seed": a1111_seed,
            "rng": self.rng,
            **(
                {"variation_seed": variation, "variation_strength": self.variation_strength}
                if variation is not None
                else {}
            ),
            **({"seed_resize_from": list(self.resize_from)} if self.resize_from else {}),
            **({"ensd": self.ensd} if self.ensd else {}),
        }
