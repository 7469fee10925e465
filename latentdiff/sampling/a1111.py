"""A1111 1.10's own sampling path (read in its modules/sd_samplers_kdiffusion.py, sd_samplers_cfg_denoiser.py,
sd_schedulers.py and rng.py for behaviour; our code): the model as k-diffusion's discrete-sigma
denoiser (CompVisDenoiser, CompVisVDenoiser for v-prediction), A1111's sigma list per schedule type,
classifier-free guidance on the denoised predictions, and a k-diffusion sampler (k_samplers.py) whose
noise comes from A1111's per-image generators (noise_a1111.py) or, for the SDE samplers, from one
Brownian tree per image seeded with its seed. So an image depends only on its own seed, as there.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from latentdiff.errors import UsageError
from latentdiff.sampling import k_samplers
from latentdiff.sampling.model_call import guided
from latentdiff.sampling.noise_a1111 import ImageNoise, cuda_numbers_in_brownian_trees


def alphas_cumprod(config: dict) -> torch.Tensor:
    """The model's alpha-bar per training timestep as A1111 holds it: the betas in float64 (the
    latent-diffusion code's "linear" schedule is diffusers' "scaled_linear"), the product stored fp32."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    else:
        raise UsageError(f"the A1111 sampling path takes beta_schedule scaled_linear or linear, not {kind!r}")
    return torch.from_numpy(np.cumprod(1.0 - betas)).float()


class DiscreteDenoiser:
    """k-diffusion's discrete-time denoiser over an eps- or v-predicting network: sigma <-> timestep by
    interpolating log sigma between the training timesteps (A1111 leaves quantization off)."""

    def __init__(self, acp: torch.Tensor, v_prediction: bool = False):
        self.sigmas = ((1 - acp) / acp) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.v = v_prediction

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep the network is asked at for `sigma`."""
        return self.sigma_to_t(sigma)

    def denoised(self, net_out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 from the network's output at sigma (sigma_data 1)."""
        if not self.v:
            return x + net_out * -sigma
        return net_out * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)


class LCMDenoiser(DiscreteDenoiser):
    """A1111's LCM denoiser (its sd_samplers_lcm.py): the model seen at LCM's 50 original timesteps
    19, 39, ..., 999 only (sigmas and schedules over those), the network asked at the nearest of them,
    and the x0 mixed with x by LCM's consistency boundary scalings (Luo et al. 2023, sigma_data 0.5,
    the timestep scaled by 10)."""

    SKIP = 20  # 1000 training timesteps / 50 original ones

    def __init__(self, acp: torch.Tensor):
        super().__init__(acp[self.SKIP - 1 :: self.SKIP].clone())

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        near = (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)
        return near * self.SKIP + (self.SKIP - 1)

    def denoised(self, net_out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = self.timestep(sigma.reshape(1).cpu()).to(x.device).float() * 10.0
        c_skip, c_out = 0.25 / (t**2 + 0.25), t / (t**2 + 0.25) ** 0.5
        return c_out * (x + net_out * -sigma) + c_skip * x


from latentdiff.sampling.a1111_sigmas import SCHEDULES, a1111_sigmas, sigmas_for  # noqa: E402,F401 (the path's)


@dataclass
class A1111Run:
    """What one A1111-path run needs beyond the model and the prompts."""

    sampler: str  # our key (k_samplers.SAMPLERS)
    schedule: str  # our key
    steps: int
    guidance: float
    options: dict = field(default_factory=dict)  # eta, s_noise, s_churn, s_tmin, s_tmax
    init: torch.Tensor | None = None  # img2img: the start latents (unnoised)
    refiner: "RefinerSwitch | None" = None  # an SDXL refiner taking over inside the sampler
    strength: float = 1.0  # img2img: A1111's denoising strength
    fixed: bool = False  # img2img: the hires pass's rule for the steps (img2img_steps)
    blend: Callable | None = None  # inpainting: keeps the init latents outside the mask


@dataclass
class RefinerSwitch:
    """A1111's refiner: from the first model call whose sigma's nearest training step t has
    (999 - t) / 1000 >= `at` (its "Refiner switch at"), the refiner's network and prompts answer;
    the sampler, its noise and its sigmas go on."""

    at: float
    net: object
    cond: object
    uncond: object
    took_over: bool = False  # set once it does: then it decodes (A1111's loaded model)


# Model calls per step of the samplers that evaluate off the schedule's sigmas (DPM fast spends one a
# step; Restart's Heun steps two; DPM adaptive's order-3 pairs three, rejected steps too): the progress
# they report, so a callback sees them advance and can stop them.
OFF_GRID = {"dpm_fast": 1, "restart": 2, "dpm_adaptive": 3}


class GuidedModel:
    """A1111's CFG denoiser: both halves in one batch, combined on the denoised predictions; the
    prompt-schedule step counts model calls as A1111's does."""

    def __init__(self, net, wrap, cond, uncond, guidance: float, sigmas=None, callback=None, per_step=None, blend=None):
        self.net, self.wrap, self.guidance, self.blend = net, wrap, guidance, blend
        self.inputs = guided(cond, uncond if uncond is not None and guidance != 1.0 else None).to(net.dtype)
        self.calls = 0
        self.steps = [float(v) for v in sigmas[:-1]] if sigmas is not None else []
        self.callback, self.done, self.refiner = callback, 0, None
        self.inputs_always_guided = False  # CFG++ takes the unconditional half whatever the guidance
        # samplers whose calls fall between the schedule's sigmas: progress counted in calls per step
        self.per_step = per_step

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.report(x, float(sigma))
        self.maybe_switch(float(sigma))
        rows = self.inputs.rows(x)
        s = sigma.to(x.device)
        c_in = 1 / (s**2 + 1) ** 0.5
        t = self.wrap.timestep(sigma.reshape(1).cpu()).reshape(()).to(x.device)
        out = self.net((rows * c_in).to(self.net.dtype), t, self.inputs.at(self.calls)).float()
        self.calls += 1
        both = self.wrap.denoised(out, rows, s)
        plain = self.inputs.guided and self.inputs.mix is None  # the unconditional half, for CFG++ samplers
        self.uncond_denoised = both.chunk(2)[0] if plain else None
        denoised = self.inputs.guide(both, self.guidance)
        return denoised if self.blend is None else self.blend(denoised)  # A1111: after the model

    def maybe_switch(self, sigma: float) -> None:
        """The refiner from the call at the training step nearest `sigma` on (RefinerSwitch)."""
        if self.refiner is not None:
            self.switch_at(int((self.wrap.sigmas - sigma).abs().argmin()))

    def switch_at(self, t: int) -> None:
        """The refiner takes over from this call on where (999 - t) / 1000 >= its switch point (A1111's
        apply_refiner; its timestep samplers give t itself, cut to a whole number)."""
        r = self.refiner
        if r is None or (999 - t) / 1000 < r.at:
            return
        self.net, self.refiner, r.took_over = r.net, None, True
        keep = r.uncond is not None and (self.guidance != 1.0 or self.inputs_always_guided)
        self.inputs = guided(r.cond, r.uncond if keep else None).to(r.net.dtype)

    def report(self, x: torch.Tensor, sigma: float) -> None:
        """`callback(step, total, latents)` once a step is done: when the next one's sigma is asked for."""
        i = self.steps.index(sigma) if sigma in self.steps else -1
        if self.per_step is not None:
            i = min(self.calls // self.per_step, len(self.steps) - 1)
        if self.callback is not None and i > self.done:
            self.done = i
            self.callback(i, len(self.steps), x)


def _bounds(fn, wrap: DiscreteDenoiser, sched: torch.Tensor, init) -> dict:
    """DPM fast and adaptive's sigma range as A1111 gives it: the model's in txt2img, the schedule's
    last non-zero and first sigma in img2img."""
    if "bounds" not in inspect.signature(fn).parameters:
        return {}
    if init is None:
        return {"bounds": (wrap.sigmas[0].item(), wrap.sigmas[-1].item())}
    return {"bounds": (sched[-2].item(), sched[0].item())}


def brownian_noise(x: torch.Tensor, sigmas: torch.Tensor, seeds: list[int]):
    """One Brownian tree per image, seeded with its seed (A1111's noise for the SDE samplers)."""
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    positive = sigmas[sigmas > 0]
    return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=list(seeds))


def img2img_steps(steps: int, strength: float, fixed: bool) -> tuple[int, int]:
    """A1111's (schedule length, t_enc) for a run from an image at `strength` (its
    sd_samplers_common.setup_img2img_steps): the img2img tab keeps `steps` and runs the last
    int(strength * steps) + 1 of them; the hires pass (`fixed`) runs `steps` + 0 of a longer schedule."""
    if fixed:
        return (int(steps / min(strength, 0.999)) if strength > 0 else 0), steps - 1
    return steps, int(min(strength, 0.999) * steps)


def sample(net, acp, run: A1111Run, noise: ImageNoise, cond, uncond, v_prediction=False, family="sd1", callback=None):
    """Latents of txt2img, or of img2img from `run.init` (A1111's sample_img2img), by A1111's path:
    `noise` its per-image noise (first() is the start); `callback(step, total, latents)` after each
    step (it may raise to stop)."""
    wrap = LCMDenoiser(acp) if run.sampler == "lcm" else DiscreteDenoiser(acp, v_prediction)
    total, t_enc = (run.steps, run.steps) if run.init is None else img2img_steps(run.steps, run.strength, run.fixed)
    sigmas = a1111_sigmas(run.sampler, run.schedule, total, wrap, family)
    sched = sigmas[total - t_enc - 1 :] if run.init is not None else sigmas
    x = noise.first() * sched[0]
    if run.init is not None:
        x = run.init.to(x.device, x.dtype) + x
    fn, fixed, _, brownian = k_samplers.SAMPLERS[run.sampler]
    model = GuidedModel(net, wrap, cond, uncond, run.guidance, sched, callback, OFF_GRID.get(run.sampler), run.blend)
    model.refiner = run.refiner
    # A1111 grows the trees on the model's device whatever its RNG setting: on an NVIDIA GPU, from CUDA's
    # numbers; "gpu" draws them on this device itself. Their span is the whole schedule's, img2img too.
    cuda_trees = brownian and noise.s.rng != "gpu"
    with cuda_numbers_in_brownian_trees() if cuda_trees else contextlib.nullcontext(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)  # torchsde's float32 edges
        draw = brownian_noise(x, sigmas, noise.seeds) if brownian else (lambda s, s_next: noise.next())
        z = fn(model, x, sched.to(x.device), draw, **fixed, **_bounds(fn, wrap, sched, run.init), **run.options)
    z = z if run.blend is None else run.blend(z)
    if callback is not None:
        callback(len(sched) - 1, len(sched) - 1, z)
    return z
