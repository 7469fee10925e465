"""A1111 1.10's timestep samplers (its modules/sd_samplers_timesteps.py and sd_samplers_timesteps_impl.py,
read for behaviour; our code): DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12)
with eta, DDIM CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance"), PLMS
(Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models", its pseudo linear multistep) and
UniPC (a1111_unipc.py). They work on the model's noise prediction at integer timesteps, not in sigma:
- A1111's timesteps for n steps are 1, 1 + 1000 // n, ... below 1000; the run goes from the last down
  to the second, so n steps make len - 1 model calls (A1111 never steps onto timestep 1's own alpha);
- CFG mixes the halves' eps (a v-prediction turned into eps first); CFG++ scales the guidance by
  1 / 12.5 and points the step back along the unconditional eps;
- txt2img starts from the unscaled noise; from an image, A1111 noises the init latents to timestep
  ts[t_enc] and runs ts[:t_enc]; eta's noise comes from the image's generators (A1111's TorchHijack);
- inpainting blends the x the model sees (before the call), not its prediction, as A1111's
  CFGDenoiserTimesteps does (mask_before_denoising).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentdiff.sampling.a1111 import A1111Run, GuidedModel, img2img_steps
from latentdiff.sampling.a1111_unipc import unipc, unipc_options
from latentdiff.sampling.model_call import guided
from latentdiff.sampling.noise_a1111 import ImageNoise
from latentdiff.sampling.unipc_settings import SETTINGS as UNIPC_SETTINGS


def timesteps(steps: int) -> torch.Tensor:
    """A1111's timesteps for `steps` (its CompVisSampler.get_timesteps), lowest first."""
    return (torch.arange(0, 1000, 1000 // steps) + 1).clamp(0, 999)


class EpsModel(GuidedModel):
    """A1111's CFGDenoiserTimesteps: model(x, t) -> the guided eps at timestep t (x unscaled); the
    unconditional eps of the last call in `uncond_eps` (CFG++). `multiplier` scales the guidance."""

    def __init__(self, net, acp, cond, uncond, guidance, v_prediction, callback, total, multiplier=1.0, blend=None):
        super().__init__(net, None, cond, uncond, guidance, torch.zeros(total + 1), callback, per_step=1, blend=blend)
        if multiplier != 1.0:  # CFG++ steps along the unconditional eps, whatever the guidance
            self.inputs, self.inputs_always_guided = guided(cond, uncond).to(net.dtype), True
        self.acp, self.v, self.multiplier = acp, v_prediction, multiplier
        self.uncond_eps = None

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        self.report(x, 0.0)
        self.switch_at(int(t))  # A1111's refiner, at the timestep itself
        x = x if self.blend is None else self.blend(x)  # A1111's timestep samplers blend before the model
        rows = self.inputs.rows(x)
        t = torch.as_tensor(t, dtype=torch.float32)
        out = self.net(rows.to(self.net.dtype), t.to(x.device), self.inputs.at(self.calls)).float()
        self.calls += 1
        if self.v:  # eps = sqrt(a) v + sqrt(1 - a) x at the timestep's integer part
            a = self.acp[int(t)]
            out = a.sqrt() * out + (1 - a).sqrt() * rows
        self.uncond_eps = out[: len(x)] if self.inputs.guided else out
        return self.inputs.guide(out, self.guidance * self.multiplier)


def _alphas(acp: torch.Tensor, ts: torch.Tensor):
    """alpha-bar at each timestep (float32) and at the one below it (float64; acp[0] below the first)."""
    return acp[ts], acp[F.pad(ts[:-1], (1, 0))].double()


def _ddim_step(x, eps, a_t, a_prev, sigma, direction, noise):
    """x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps_dir + sigma z (DDIM eq. 12)."""
    pred_x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    x = a_prev**0.5 * pred_x0 + (1.0 - a_prev - sigma**2) ** 0.5 * direction
    return x + sigma * noise() if sigma else x


def ddim(model, x, ts, acp, noise, eta=0.0, cfgpp=False):
    """DDIM over `ts` (lowest first) from the last to the second; eta > 0 adds DDPM-like noise. CFG++
    (`cfgpp`; the model scales its guidance by 1 / 12.5): the direction along the unconditional eps."""
    alphas, prev = _alphas(acp, ts)
    sigmas = eta * ((1 - prev) / (1 - alphas.double()) * (1 - alphas.double() / prev)).sqrt()
    for index in range(len(ts) - 1, 0, -1):
        eps = model(x, ts[index].item())
        direction = model.uncond_eps if cfgpp else eps
        a_t, a_prev, sigma = (torch.tensor(float(v[index])) for v in (alphas, prev, sigmas))
        x = _ddim_step(x, eps, a_t, a_prev, float(sigma), direction, noise)
    return x


_ADAMS_BASHFORTH = {1: (3, -1), 2: (23, -16, 5), 3: (55, -59, 37, -9)}  # / 2, 12, 24


def plms(model, x, ts, acp, noise):
    """PLMS: a pseudo improved-Euler first step (two model calls), then Adams-Bashforth of order 2, 3
    and 4 over the previous eps, each through DDIM's eta-0 step."""
    alphas, prev = _alphas(acp, ts)
    old = []
    for index in range(len(ts) - 1, 0, -1):
        a_t, a_prev = torch.tensor(float(alphas[index])), torch.tensor(float(prev[index]))
        eps = model(x, ts[index].item())
        if not old:
            x_next = _ddim_step(x, eps, a_t, a_prev, 0.0, eps, noise)
            eps_prime = (eps + model(x_next, ts[max(index - 1, 0)].item())) / 2
        else:
            weights = _ADAMS_BASHFORTH[len(old)]
            eps_prime = sum(w * e for w, e in zip(weights, [eps, *reversed(old)])) / (2, 12, 24)[len(old) - 1]
        x = _ddim_step(x, eps_prime, a_t, a_prev, 0.0, eps_prime, noise)
        old = [*old, eps][-3:]
    return x


# our key -> (function, fixed options)
SAMPLERS = {"ddim": (ddim, {}), "ddim_cfg++": (ddim, {"cfgpp": True}), "pndm": (plms, {}), "unipc": (unipc, {})}


def sample(net, acp, run: A1111Run, noise: ImageNoise, cond, uncond, v_prediction=False, callback=None):
    """Latents of txt2img, or of img2img from `run.init`, by A1111's timestep sampler `run.sampler`."""
    total, t_enc = (run.steps, None) if run.init is None else img2img_steps(run.steps, run.strength, run.fixed)
    ts = timesteps(total)
    x = noise.first()
    if run.init is not None:  # A1111: the init noised to ts[t_enc], then ts[:t_enc]
        a = acp[ts[t_enc]]
        x = run.init.to(x.device, x.dtype) * a.sqrt() + x * (1 - a).sqrt()
        ts = ts[:t_enc]
    fn, fixed = SAMPLERS[run.sampler]
    multiplier = 1 / 12.5 if fixed.get("cfgpp") else 1.0
    model = EpsModel(net, acp, cond, uncond, run.guidance, v_prediction, callback, len(ts) - 1, multiplier, run.blend)
    model.refiner = run.refiner
    options = {k: v for k, v in run.options.items() if k not in UNIPC_SETTINGS}
    extra = {"img2img": run.init is not None, **unipc_options(run.options)} if fn is unipc else {}
    z = fn(model, x, ts, acp, lambda: noise.next(), **fixed, **extra, **options)
    z = z if run.blend is None else run.blend(z)
    if callback is not None:
        callback(len(ts) - 1, len(ts) - 1, z)
    return z
