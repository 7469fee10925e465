"""ComfyUI's heunpp2, gradient_estimation (and _cfg_pp), seeds_2, seeds_3, ddpm, lcm, dpm_fast and dpm_adaptive
on its KSampler path (sampling/comfy_samplers_more.py) against references written apart from ours
(k-diffusion's own for the last two)
(tests/sampling/comfy_refs_more.py), with test_comfy_samplers.py's model, sigmas and noise. Tiny random
SD1 model, pixels within 1/255."""

from unittest import mock

import numpy as np
import pytest

from tests.sampling import test_comfy_samplers as base
from tests.sampling.comfy_refs_more import (
    ref_ddpm,
    ref_dpm_solver,
    ref_gradient_estimation,
    ref_heunpp2,
    ref_lcm,
    ref_seeds,
)

MORE = {
    "heunpp2": (ref_heunpp2, {}),
    "gradient_estimation": (ref_gradient_estimation, {}),
    "gradient_estimation_cfg_pp": (ref_gradient_estimation, {"cfg_pp": True}),
    "seeds_2": (ref_seeds, {"stages": 2}),
    "seeds_3": (ref_seeds, {"stages": 3}),
    "dpm_fast": (ref_dpm_solver, {}),
    "dpm_adaptive": (ref_dpm_solver, {"adaptive": True}),
    "ddpm": (ref_ddpm, {}),
    "lcm": (ref_lcm, {}),
}


@pytest.mark.parametrize(
    "name, scheduler",
    [
        ("heunpp2", "karras"),
        pytest.param("gradient_estimation", "normal", marks=pytest.mark.slow),
        ("gradient_estimation_cfg_pp", "simple"),
        ("seeds_2", "karras"),
        ("seeds_3", "exponential"),
        ("dpm_fast", "karras"),
        pytest.param("dpm_adaptive", "normal", marks=pytest.mark.slow),  # ~5 s: adaptive steps
        ("ddpm", "simple"),
        ("lcm", "sgm_uniform"),
    ],
)
def test_more_samplers_match_comfyuis_rules(pipe_sd1, name, scheduler):
    with mock.patch.dict(base.REFERENCES, MORE):
        want = base.reference(pipe_sd1, name, scheduler)
    got = base.ours(pipe_sd1, name, scheduler)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert want.std() > 5  # a picture, not a flat field both could agree on
