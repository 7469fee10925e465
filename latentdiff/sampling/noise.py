"""Noise modes: where a request's random numbers come from.

- "per_image" (the default, diffusers' rule): image k of a call draws its initial noise and its
  sampler's step noise from its own CPU generator seeded seed + k, so an image does not depend on
  the batch it was made in (sampling/loop.py `initial_noise`).
- "comfy" (ComfyUI's rule, comfy/sample.py `prepare_noise`, read for behaviour): the initial noise
  of the whole batch latent (N, C, h, w) is one `torch.randn` on the CPU from
  `torch.manual_seed(seed)`; image k is row k of it, not the noise of seed + k. ComfyUI's ancestral
  and SDE steps draw from a second generator seeded with the same seed, on the latents' device, the
  whole batch at once (comfy/k_diffusion/sampling.py `default_noise_sampler`); one Brownian tree
  serves the whole batch (`BrownianTreeNoiseSampler` with one integer seed). With ComfyUI's own
  k-diffusion samplers this mode runs ComfyUI's KSampler path (sampling/comfy.py).
- "comfy_nv": the same, as ComfyUI draws it on an NVIDIA GPU: its ancestral samplers' step noise is
  CUDA's numbers of the seed (sampling/noise_a1111.py's Philox), on ComfyUI's own path only.

Torch is imported by the functions that draw, not at import: the request's checks name the modes.
"""

from __future__ import annotations

from dataclasses import dataclass

NOISE_MODES = ("per_image", "comfy", "comfy_nv")
COMFY_DEVICES = {"comfy": "cpu", "comfy_nv": "nv"}  # where the ComfyUI run drew its step noise
# Rows of one ComfyUI batch latent: its EmptyLatentImage allows 4096, and one row is drawn for each.
MAX_NOISE_BATCH = 4096


@dataclass(frozen=True)
class ComfyNoise:
    """The noise of `rows` of a ComfyUI batch latent of `batch` rows drawn from `seed`."""

    seed: int
    rows: tuple[int, ...]
    batch: int
    device: str = "cpu"  # where ComfyUI drew its step noise: "cpu" or "nv" (an NVIDIA GPU)

    def initial(self, shape: tuple[int, ...]):
        """(len(rows), *shape) fp32 CPU noise: rows `rows` of torch.randn((batch, *shape)) drawn from
        torch.manual_seed(seed), as ComfyUI draws it (comfy_batch_noise)."""
        return comfy_batch_noise(shape, self.seed, self.rows, self.batch)

    def step_generators(self, device) -> list:
        """One generator for the whole batch's step noise, on the latents' device, seeded as ComfyUI's
        2026 default noise sampler seeds it on a CPU (seed + 1; 0.3.64 and earlier used the seed itself):
        each step then draws every row."""
        import torch

        return [torch.Generator(device).manual_seed(self.seed + 1)]


def comfy_batch_noise(shape: tuple[int, ...], seed: int, rows, batch: int):
    """Rows `rows` of the (batch, *shape) noise ComfyUI draws for seed `seed`.

    CPU `torch.randn` fills a tensor with uniform draws in order and turns each block of 16 into
    normals (Box-Muller), redoing the last 16 when the size is no multiple of 16. So where one row
    holds a multiple of 16 values, the first r rows of the batch are the first r rows drawn alone
    and only the rows up to the last one asked for are drawn; otherwise the whole batch is."""
    import torch

    rows = list(rows)
    per_row = 1
    for n in shape:
        per_row *= n
    drawn = max(rows) + 1 if per_row % 16 == 0 else batch
    g = torch.Generator("cpu").manual_seed(seed)  # what torch.manual_seed(seed) seeds and returns
    return torch.randn((drawn, *shape), generator=g, dtype=torch.float32)[rows]
