"""Every sampler and scheduler name of ComfyUI's KSampler (its comfy/samplers.py KSAMPLER_NAMES + ddim,
uni_pc, uni_pc_bh2 and SCHEDULER_NAMES, v0.3.64, written out here) read from a graph: each pair becomes
our sampler on ComfyUI's own path, or runs on diffusers' class, or is one line naming the sampler; the
pairs refused are exactly the known gaps (docs/comfyui.md#samplers). No model is loaded."""

import copy

import pytest
from helpers import COMFY_GRAPH

from latentdiff.errors import UsageError
from latentdiff.images.comfy_graph import params_from_comfy
from latentdiff.sampling.sampler_table import COMFY_OWN

KSAMPLER_NAMES = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2"]
KSAMPLER_NAMES += ["dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral"]
KSAMPLER_NAMES += ["dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp"]
KSAMPLER_NAMES += ["dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde"]
KSAMPLER_NAMES += ["dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep"]
KSAMPLER_NAMES += ["res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp"]
KSAMPLER_NAMES += ["gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver"]
KSAMPLER_NAMES += ["sa_solver_pece"]
SAMPLER_NAMES = [*KSAMPLER_NAMES, "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal"]
SCHEDULER_NAMES += ["linear_quadratic", "kl_optimal"]
REFUSED = {("uni_pc", s) for s in SCHEDULER_NAMES}  # ComfyUI's B(h) = h UniPC: not run
REFUSED |= {("uni_pc_bh2", s) for s in ("simple", "ddim_uniform", "linear_quadratic", "kl_optimal")}  # diffusers' UniPC


def read(sampler: str, scheduler: str) -> dict:
    g = copy.deepcopy(COMFY_GRAPH)
    g["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    return params_from_comfy(g, "graph")


def test_every_comfyui_name_runs_or_is_a_known_gap():
    refused = set()
    for sampler in SAMPLER_NAMES:
        for scheduler in SCHEDULER_NAMES:
            try:
                read(sampler, scheduler)
            except UsageError as e:
                assert "\n" not in str(e) and repr(sampler) in str(e), str(e)
                refused.add((sampler, scheduler))
    assert refused == REFUSED
    assert set(KSAMPLER_NAMES) - {"uni_pc_bh2"} <= set(COMFY_OWN)  # every k-diffusion one on ComfyUI's own path


@pytest.mark.parametrize("name", ["uni_pc", "exp_heun_2_x0", "euler_ancestral_RF"])  # exp_heun_2_x0: 2026 code only
def test_names_comfyui_has_not_or_we_do_not_run_are_one_line(name):
    with pytest.raises(UsageError, match="choose one of"):
        read(name, "normal")
