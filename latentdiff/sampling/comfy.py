"""ComfyUI's own KSampler path (its 2026 code, samplers.py @311c0140; read in its comfy/samplers.py,
sample.py, model_sampling.py and k_diffusion/sampling.py for behaviour, GPL-3.0; our code): the model as
ComfyUI's discrete-sigma model sampling (sigmas from float64 betas; the network called at the nearest
training timestep, not an interpolated one), its nine sigma schedulers, its KSampler's step rules (a
partial denoise, the advanced node's start and end steps), the first noise scaled by sqrt(1 + sigma^2)
when sampling from the model's full sigma, and its samplers' noise: ancestral steps from one generator
of the seed for the whole batch latent (on the CPU seed + 1, on an NVIDIA GPU CUDA's numbers of the
seed), SDE steps from one Brownian tree of the seed spanning the whole batch. The samplers are
k_samplers.py's (k-diffusion's arithmetic, which ComfyUI's fork keeps for these)."""

from __future__ import annotations

import inspect
import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from latentdiff.errors import UsageError
from latentdiff.sampling import comfy_samplers, k_samplers
from latentdiff.sampling.a1111 import DiscreteDenoiser, GuidedModel
from latentdiff.sampling.a1111_sigmas import sigmas_for
from latentdiff.sampling.noise_a1111 import Philox, cuda_numbers_in_brownian_trees
from latentdiff.sampling.sampler_table import COMFY_OWN

SAMPLERS = COMFY_OWN
RUNS = {**k_samplers.SAMPLERS, **comfy_samplers.SAMPLERS}  # our key -> (function, options, _, Brownian)
DISCARD = ("dpm_2", "dpm_2_ancestral")  # KSampler's discard_penultimate_sigma (and uni_pc's, not run here)
SCHEDULERS = ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal")
SCHEDULERS += ("linear_quadratic", "kl_optimal")
DEVICES = ("cpu", "nv")  # where ComfyUI ran: its CPU, or an NVIDIA GPU


class ComfyModelSampling(DiscreteDenoiser):
    """ComfyUI's ModelSamplingDiscrete (EPS or V_PREDICTION): its sigmas from float64 betas and
    alpha-bars, stored fp32, and the network's timestep the nearest training step to sigma."""

    def __init__(self, config: dict, v_prediction: bool = False):
        n = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        kind = config.get("beta_schedule", "scaled_linear")
        if kind not in ("scaled_linear", "linear"):
            raise UsageError(f"ComfyUI's sampling path takes beta_schedule scaled_linear or linear, not {kind!r}")
        square = kind == "scaled_linear"  # ComfyUI's "linear" is diffusers' scaled_linear
        betas = (
            torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
            if square
            else torch.linspace(start, end, n, dtype=torch.float64)
        )
        acp = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - acp) / acp) ** 0.5
        self.sigmas, self.log_sigmas, self.v = sigmas.float(), sigmas.log().float(), v_prediction

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).float()


def _beta(s: ComfyModelSampling, n: int, a: float = 0.6, b: float = 0.6) -> torch.Tensor:
    """The beta schedule (Lee et al. 2024) as ComfyUI makes it: training steps at the beta
    distribution's quantiles, rounded, repeats dropped."""
    from scipy import stats

    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), a, b) * (len(s.sigmas) - 1))
    kept = [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
    return torch.FloatTensor([float(s.sigmas[int(t)]) for t in kept] + [0.0])


def _linear_quadratic(s: ComfyModelSampling, n: int, threshold: float = 0.025) -> torch.Tensor:
    """Mochi's schedule: linear to `threshold` over the first half of the steps, then quadratic to 1,
    flipped and scaled by the model's largest sigma."""
    if n == 1:
        return torch.FloatTensor([1.0, 0.0]) * s.sigmas[-1]
    lin = n // 2
    quad = n - lin
    diff = lin - threshold * n
    a, b = diff / (lin * quad**2), threshold / lin - 2 * diff / quad**2
    ramp = [i * threshold / lin for i in range(lin)] + [a * i**2 + b * i + a * lin**2 for i in range(lin, n)]
    return torch.FloatTensor([1.0 - x for x in [*ramp, 1.0]]) * s.sigmas[-1]


def _kl_optimal(s: ComfyModelSampling, n: int) -> torch.Tensor:
    """ComfyUI's KL-optimal schedule: n sigmas from the largest to the smallest, then 0."""
    lo, hi = float(s.sigmas[0]), float(s.sigmas[-1])
    w = torch.arange(n, dtype=torch.float).div_(max(n - 1, 1))
    return torch.cat([(w * math.atan(lo) + (1 - w) * math.atan(hi)).tan_(), torch.zeros(1)])


_OWN = {"beta": _beta, "linear_quadratic": _linear_quadratic, "kl_optimal": _kl_optimal}
_SHARED = {"ddim_uniform": "ddim"}  # A1111 took these from ComfyUI: sampling/a1111.py's functions


def schedule(s: ComfyModelSampling, scheduler: str, n: int) -> torch.Tensor:
    """ComfyUI's calculate_sigmas_scheduler: n steps -> n + 1 sigmas."""
    if scheduler in _OWN:
        return _OWN[scheduler](s, n)
    return sigmas_for(_SHARED.get(scheduler, scheduler), n, s)


def ksampler_sigmas(s: ComfyModelSampling, sampler: str, scheduler: str, steps: int, denoise: float = 1.0):
    """KSampler's sigmas: the penultimate dropped for DPM2 (one step more made); a partial denoise
    the last steps + 1 of a schedule of int(steps / denoise) steps."""

    def made(n):
        sigmas = schedule(s, scheduler, n + (sampler in DISCARD))
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if sampler in DISCARD else sigmas

    if denoise > 0.9999:
        return made(steps)
    return made(int(steps / denoise))[-(steps + 1) :] if denoise > 0 else torch.zeros(0)


def advanced(sigmas: torch.Tensor, start: int | None, end: int | None, force_full_denoise: bool) -> torch.Tensor:
    """KSamplerAdvanced's cut: steps `start` to `end` of the schedule (empty: nothing to run)."""
    if end is not None and end < len(sigmas) - 1:
        sigmas = sigmas[: end + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start is not None:
        sigmas = sigmas[start:] if start < len(sigmas) - 1 else sigmas[:0]
    return sigmas


@dataclass
class StepNoise:
    """The samplers' fresh noise for rows `rows` of a batch latent of `batch` rows."""

    seed: int
    rows: tuple[int, ...]
    batch: int
    device: str = "cpu"  # where ComfyUI ran (DEVICES)

    def ancestral(self, shape: tuple[int, ...], on):
        """ComfyUI's default noise sampler: one generator for the whole batch, seed + 1 on a CPU."""
        full = (self.batch, *shape)
        if self.device == "nv":
            source = Philox(self.seed)
            return lambda s, s_next: source.randn(full)[list(self.rows)].to(on)
        g = torch.Generator("cpu").manual_seed(self.seed + 1)
        return lambda s, s_next: torch.randn(full, generator=g)[list(self.rows)].to(on)

    def brownian(self, shape: tuple[int, ...], sigmas: torch.Tensor, on):
        """One Brownian tree of the seed over the whole batch, between the schedule's sigmas."""
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        positive = sigmas[sigmas > 0]
        tree = BrownianTreeNoiseSampler(torch.zeros(self.batch, *shape), positive.min(), sigmas.max(), seed=self.seed)
        return lambda s, s_next: tree(s.cpu(), s_next.cpu())[list(self.rows)].to(on)


def check(sampler: str, device: str) -> None:
    if sampler not in SAMPLERS:
        raise UsageError(f"ComfyUI's own path runs the samplers {', '.join(SAMPLERS)}; not {sampler!r}")
    if device not in DEVICES:
        raise UsageError(f"ComfyUI's device must be one of {', '.join(DEVICES)}, not {device!r}")


@dataclass(frozen=True)
class Stage:
    """One KSampler or KSamplerAdvanced node's run: its sampler, scheduler and step rules."""

    sampler: str
    scheduler: str
    steps: int
    cfg: float
    seed: int
    denoise: float = 1.0  # KSampler's; the advanced node runs 1.0
    add_noise: bool = True  # KSamplerAdvanced's add_noise "enable"
    start: int | None = None  # start_at_step
    end: int | None = None  # end_at_step
    leftover: bool = False  # return_with_leftover_noise "enable": the last sigma kept
    refiner: bool = False  # run on the refiner's model and prompts (the graph's second checkpoint)

    def sigmas(self, s: ComfyModelSampling) -> torch.Tensor:
        sigmas = ksampler_sigmas(s, self.sampler, self.scheduler, self.steps, self.denoise)
        return advanced(sigmas, self.start, self.end, not self.leftover)


class Masked:
    """KSampler's latent mask (its KSamplerX0Inpaint): outside the mask the model sees the start latent
    noised to sigma with the run's own noise, and its prediction there is the start latent."""

    def __init__(self, model, mask: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor):
        self.model, self.mask, self.latent, self.noise = model, mask, latent, noise

    def __getattr__(self, name: str):
        """The guided model's own: CFG++ samplers read its unmasked unconditional prediction, as ComfyUI's."""
        return getattr(self.__dict__["model"], name)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.mask
        x = x * self.mask + (self.noise * sigma + self.latent) * keep
        return self.model(x, sigma) * self.mask + self.latent * keep


def _bounds(fn, sigmas) -> dict:
    """DPM fast / adaptive's sigma range, as ComfyUI gives it: the schedule's last sigma (the one before
    where the last is 0) and its first."""
    if "bounds" not in inspect.signature(fn).parameters:
        return {}
    return {"bounds": (float(sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]), float(sigmas[0]))}


def sample(net, s: ComfyModelSampling, sampler: str, sigmas, first, noise: StepNoise, cond, uncond, cfg, callback=None, latent=None, mask=None):  # fmt: skip
    """Latents of ComfyUI's KSampler from `first` (its prepare_noise rows, zeros without added noise)
    over `sigmas`, from `latent` (None: an empty latent), `mask` (B, C, h, w) its noise mask;
    `callback(step, total, latents)` after each step (it may raise to stop)."""
    latent = torch.zeros_like(first) if latent is None else latent.to(first.device, first.dtype)
    if len(sigmas) <= 1:  # nothing to run: ComfyUI hands the latent on
        return latent
    key, on_device = SAMPLERS[sampler]
    fn, fixed, _, brownian = RUNS[key]
    full = math.isclose(float(s.sigmas[-1]), float(sigmas[0]), rel_tol=1e-5) or float(sigmas[0]) > float(s.sigmas[-1])
    x = first * (torch.sqrt(1.0 + sigmas[0] ** 2.0) if full else sigmas[0]) + latent
    shape = tuple(x.shape[1:])
    model = GuidedModel(net, s, cond, uncond, cfg, sigmas, callback)
    if mask is not None:  # ComfyUI's ddim noises the area outside the mask from seed + 1 (on the CPU)
        outside = (
            torch.randn(first.shape, generator=torch.Generator().manual_seed(noise.seed + 1))
            if sampler == "ddim"
            else first
        )
        model = Masked(model, mask.to(x.device), latent, outside.to(first))
    # the _gpu SDE samplers grow their tree on the device: on an NVIDIA GPU, from CUDA's numbers
    trees = cuda_numbers_in_brownian_trees() if brownian and on_device and noise.device == "nv" else nullcontext()
    with trees, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)  # torchsde's float32 edges
        draw = noise.brownian(shape, sigmas, x.device) if brownian else noise.ancestral(shape, x.device)
        z = fn(model, x, sigmas.to(x.device), draw, **fixed, **_bounds(fn, sigmas))
    if callback is not None:
        callback(len(sigmas) - 1, len(sigmas) - 1, z)
    return z
