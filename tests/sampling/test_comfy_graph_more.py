"""ComfyUI graphs beyond two stages (images/comfy_latent.py chain, workflows/comfy_start.py ComfyRun):
three chained KSamplerAdvanced nodes read from a graph and run, each from the last one's latents, and
ComfyUI's ddim (its Euler, with a masked area noised from seed + 1), against
ComfyUI's rules rebuilt with k-diffusion's own `sample_*` (tests/sampling/test_comfy_graph_run.py).
Tiny random SD1 model, pixels within 1/255."""

import copy
from unittest import mock

import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.images.comfy_graph import params_from_comfy
from latentdiff.images.comfy_latent import MAX_STAGES
from tests.images.test_comfy_png_run import chained_graph
from tests.sampling import test_comfy_graph_run
from tests.sampling.test_comfy_graph_run import SEED, close, ours, reference, stage
from tests.sampling.test_comfy_path import Sampling, reference_sigmas

picture = test_comfy_graph_run.picture  # its fixture: a 34x32 RGBA picture


def chain_of(n: int) -> dict:
    """chained_graph() with n KSamplerAdvanced nodes: 0-2 of 3 steps, then n - 1 nodes 2-end, each fed the last."""
    g = chained_graph()
    last = "12"
    for k in range(n - 2):
        key = str(100 + k)
        g[key] = copy.deepcopy(g["12"])
        g[key]["inputs"]["latent_image"] = [last, 0]
        last = key
    g["8"]["inputs"]["samples"] = [last, 0]
    return g


def test_a_graph_of_three_chained_samplers_is_three_stages():
    stages = params_from_comfy(chain_of(3), "graph")["comfy"]["run"]["stages"]
    assert len(stages) == 3 and [st["start"] for st in stages] == [0, 2, 2]
    with pytest.raises(UsageError, match=f"chains {MAX_STAGES + 1} sampler nodes; latentdiff runs at most"):
        params_from_comfy(chain_of(MAX_STAGES + 1), "graph")


def test_three_advanced_samplers_chained(pipe_sd1, picture):
    """Steps 0-2 of 6 with leftover noise, 2-4 (none added, leftover kept), 4-end with fresh noise."""
    s = Sampling(pipe_sd1.components.scheduler_config)
    full = reference_sigmas(s, "karras", 6)
    runs = [
        ("sample_dpmpp_2m", full[:3], True),
        ("sample_euler_ancestral", full[2:5], False),
        ("sample_heun", full[4:], True),
    ]
    stages = [
        stage("dpmpp_2m", "karras", 6, end=2, leftover=True),
        stage("euler_ancestral", "karras", 6, start=2, end=4, add_noise=False, leftover=True),
        stage("heun", "karras", 6, start=4),
    ]
    got = ours(pipe_sd1, {"stages": stages, "image": str(picture)})
    assert close(got, reference(pipe_sd1, picture, runs))


def test_ddim_is_comfyuis_euler_with_its_own_masked_noise(pipe_sd1, picture):
    """ComfyUI's ddim runs Euler; outside a noise mask its start latent is noised from seed + 1, not the seed."""
    s = Sampling(pipe_sd1.components.scheduler_config)
    runs = [("sample_euler", reference_sigmas(s, "karras", 4), True)]
    graph = {"stages": [stage("ddim", "karras")], "image": str(picture), "mask": [str(picture), "A"]}
    real = test_comfy_graph_run.guided

    def ddim_noise(pipe, s, latent, noise, mask):
        return real(pipe, s, latent, torch.randn(latent.shape, generator=torch.manual_seed(SEED + 1)), mask)

    with mock.patch.object(test_comfy_graph_run, "guided", ddim_noise):
        want = reference(pipe_sd1, picture, runs, (False, 0))
    assert close(ours(pipe_sd1, graph), want)
    euler = ours(pipe_sd1, {**graph, "stages": [stage("euler", "karras")]})
    assert not close(euler, want)  # Euler's masked area is noised from the seed itself
