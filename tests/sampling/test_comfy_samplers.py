"""ComfyUI's own samplers beyond k-diffusion's (sampling/comfy_samplers.py, comfy_sa_solver.py) on its
KSampler path, against references written apart from ours (tests/sampling/comfy_refs.py): iPNDM,
iPNDM-v, res multistep (plain, ancestral, CFG++), ER-SDE, DEIS, SA-Solver and the CFG++ samplers,
whose renoising uses the unconditional prediction. The model, its sigmas and its noise are ComfyUI's
rebuilt in tests/sampling/test_comfy_path.py. Tiny random SD1 model, pixels within 1/255."""

import numpy as np
import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.images.write import to_pil
from tests.sampling.comfy_refs import (
    ref_deis,
    ref_dpmpp_2m_cfg_pp,
    ref_dpmpp_2s_ancestral_cfg_pp,
    ref_er_sde,
    ref_euler_cfg_pp,
    ref_ipndm,
    ref_res_multistep,
    ref_sa_solver,
)
from tests.sampling.test_comfy_path import Sampling, reference_sigmas

PROMPT, NEGATIVE, SIZE, STEPS, CFG, SEED = "a red fox", "blurry", 32, 5, 6.0, 3


class Model:
    """ComfyUI's CFG denoiser on the tiny UNet; `uncond` its last unconditional prediction (post-CFG hook)."""

    def __init__(self, pipe):
        self.c, self.s = pipe.components, Sampling(pipe.components.scheduler_config)
        both = pipe.conditioning([PROMPT], [NEGATIVE], SIZE, SIZE, "plain", 1)
        self.hidden = torch.cat([both[1].hidden, both[0].hidden])  # uncond, cond

    def __call__(self, x, sigma):
        rows = torch.cat([x, x])
        eps = self.c.unet(rows / (sigma**2 + 1) ** 0.5, self.s.timestep(sigma).float().repeat(2), self.hidden).sample
        self.uncond, cond = (rows - eps * sigma).chunk(2)
        return self.uncond + (cond - self.uncond) * CFG


REFERENCES = {  # ComfyUI name -> (reference, options)
    "ipndm": (ref_ipndm, {}),
    "ipndm_v": (ref_ipndm, {"variable": True}),
    "res_multistep": (ref_res_multistep, {}),
    "res_multistep_ancestral": (ref_res_multistep, {"eta": 1.0}),
    "res_multistep_cfg_pp": (ref_res_multistep, {"cfg_pp": True}),
    "euler_cfg_pp": (ref_euler_cfg_pp, {}),
    "euler_ancestral_cfg_pp": (ref_euler_cfg_pp, {"eta": 1.0}),
    "dpmpp_2m_cfg_pp": (ref_dpmpp_2m_cfg_pp, {}),
    "dpmpp_2s_ancestral_cfg_pp": (ref_dpmpp_2s_ancestral_cfg_pp, {}),
    "res_multistep_ancestral_cfg_pp": (ref_res_multistep, {"eta": 1.0, "cfg_pp": True}),
    "er_sde": (ref_er_sde, {}),
    "deis": (ref_deis, {}),
    "sa_solver": (ref_sa_solver, {}),
    "sa_solver_pece": (ref_sa_solver, {"pece": True}),
}


@torch.no_grad()
def reference(pipe, name, scheduler="karras"):
    model = Model(pipe)
    sigmas = reference_sigmas(model.s, scheduler, STEPS)
    side = SIZE // pipe.scale_factor
    x = torch.randn((1, 4, side, side), generator=torch.manual_seed(SEED)) * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    g = torch.Generator().manual_seed(SEED + 1)  # ComfyUI's default noise sampler on a CPU (test_comfy_path.py)
    fn, options = REFERENCES[name]
    z = fn(model, x, sigmas, lambda: torch.randn(x.shape, generator=g), **options)
    return np.asarray(to_pil(pipe.decode(z))[0])


def ours(pipe, name, scheduler="karras", **kw):
    (image,) = pipe(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=CFG, width=SIZE, height=SIZE, seed=SEED,
                    scheduler=f"{name} {scheduler}", prompt_syntax="plain", noise="comfy", **kw)  # fmt: skip
    return np.asarray(image)


FAST = ("ipndm_v", "euler_ancestral_cfg_pp", "er_sde", "sa_solver")


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(REFERENCES)]
)
def test_sampler_matches_comfyuis_rules(pipe_sd1, name):
    got, want = ours(pipe_sd1, name), reference(pipe_sd1, name)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"scheduler": "euler_cfg_pp", "guidance": 1.0, "noise": "comfy"},
            "CFG\\+\\+ sampler euler_cfg_pp needs a cfg other than 1",
        ),
        (
            {"scheduler": "ipndm"},
            "'iPNDM' has no exact diffusers scheduler and runs only on ComfyUI's own \\(--noise comfy\\) path",
        ),
    ],
)
def test_what_these_samplers_cannot_run_is_one_error(pipe_sd1, kwargs, message):
    with pytest.raises(UsageError, match=message):
        pipe_sd1("x", steps=2, width=SIZE, height=SIZE, **kwargs)
