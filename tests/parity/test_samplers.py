"""Samplers x schedule types against diffusers' StableDiffusionPipeline with the scheduler configured
as written here (not through our table): within 1/255. The full matrix is slow; a representative
subset runs in the fast suite. Also: SDE and ancestral batches equal their seeds run alone, the
options (eta, s_noise, s_churn) reach the steps, and DPM++ 2M's Automatic is Karras (A1111 1.10)."""

import functools

import diffusers
import pytest
import torch
from helpers import max_pixel_diff, paired

from latentdiff.errors import UsageError
from latentdiff.sampling.schedulers import SCHEDULERS, runnable_schedules
from latentdiff.sampling.sigmas import FUNCTIONS

LATENT = {"clip_sample": False, "set_alpha_to_one": False}
SDE = {"algorithm_type": "sde-dpmsolver++"}
# Our sampler name -> (diffusers class, its settings), written out independently of the table.
EXPECTED = {
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++sde": ("DPMSolverSDEScheduler", {}),
    "dpm++2m_sde": ("DPMSolverMultistepScheduler", {**SDE, "solver_type": "midpoint", "solver_order": 2}),
    "dpm++2m_sde_heun": ("DPMSolverMultistepScheduler", {**SDE, "solver_type": "heun", "solver_order": 2}),
    "dpm++3m_sde": ("DPMSolverMultistepScheduler", {**SDE, "solver_order": 3}),
    "ddim": ("DDIMScheduler", LATENT),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", LATENT),
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "tcd": ("TCDScheduler", LATENT),
    "deis": ("DEISMultistepScheduler", {}),
}
SCHEDULE = {
    "uniform": {"timestep_spacing": "linspace"},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
}
# A1111 1.10's schedule for "Automatic" (modules/sd_samplers_kdiffusion.py); others: plain sigmas.
AUTOMATIC = {"dpm++2m": "karras", "dpm++sde": "karras", "dpm2": "karras", "dpm2_a": "karras"}
AUTOMATIC.update(dict.fromkeys(["dpm++2m_sde", "dpm++2m_sde_heun", "dpm++3m_sde"], "exponential"))
CELLS = [(s, k) for s in SCHEDULERS for k in runnable_schedules(s)]
FAST = [
    ("euler", "automatic"),
    ("euler_a", "sgm_uniform"),
    ("dpm++2m", "automatic"),
    ("dpm++2m_sde", "karras"),
    ("dpm++sde", "automatic"),
    ("dpm2_a", "beta"),
    ("heun", "exponential"),
    ("ddim", "uniform"),
    ("lcm", "automatic"),
    ("tcd", "sgm_uniform"),
    ("euler", "kl_optimal"),
    ("euler", "ddim"),
]


@pytest.fixture(scope="module")
def pipes(tiny_sd1):
    return paired({"sd1": tiny_sd1}, "StableDiffusionPipeline")["sd1"]


def reference(ref, ours, sampler, schedule, seed, n, steps=3, **step):
    cls, sets = EXPECTED[sampler]
    schedule = AUTOMATIC.get(sampler) if schedule == "automatic" else schedule
    config = {**ours.components.scheduler_config, **sets, **SCHEDULE.get(schedule, {})}
    if cls == "DPMSolverSDEScheduler":  # ours: image k's Brownian tree is seeded with its seed
        config["noise_sampler_seed"] = [seed + k for k in range(n)]
    ref.scheduler = getattr(diffusers, cls).from_config(config)
    # The pipeline passes eta (default 0) to every step that takes it; ours: the step's own default
    # where none is given (TCD's 0.3, the published setting).
    eta = step.pop("eta", 0.3 if sampler == "tcd" else 0.0)
    if step:  # the other options go to every step too (wraps: the pipeline reads step's signature)
        real = ref.scheduler.step
        ref.scheduler.step = functools.wraps(real)(lambda *a, **kw: real(*a, **{**kw, **step}))
    gens = [torch.Generator("cpu").manual_seed(seed + k) for k in range(n)]
    extra = {"num_inference_steps": steps}
    if schedule in FUNCTIONS:  # A1111's sigma lists, through the pipeline's own `sigmas=`
        acp = ref.scheduler.alphas_cumprod.numpy()
        extra = {"sigmas": FUNCTIONS[schedule](steps, ((1 - acp) / acp) ** 0.5)}
    return ref("a red apple", guidance_scale=5.0, num_images_per_prompt=n, generator=gens, eta=eta, **extra).images


def check_cell(pipes, sampler, schedule):
    ours, ref = pipes
    mine = ours("a red apple", steps=3, guidance=5.0, seed=11, num_images=2, scheduler=sampler, schedule=schedule)
    assert max_pixel_diff(mine, reference(ref, ours, sampler, schedule, 11, 2)) <= 1, (sampler, schedule)


@pytest.mark.parametrize("sampler, schedule", FAST)
def test_a_cell_matches_diffusers(pipes, sampler, schedule):
    check_cell(pipes, sampler, schedule)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, schedule", [c for c in CELLS if c not in FAST])
def test_every_cell_matches_diffusers(pipes, sampler, schedule):
    check_cell(pipes, sampler, schedule)


def test_the_expectations_cover_every_runnable_sampler():
    assert set(EXPECTED) == set(SCHEDULERS)
    assert len(CELLS) > 60


@pytest.mark.parametrize("sampler", ["dpm++sde", "dpm++2m_sde", "euler_a", "dpm2_a", "tcd"])
def test_a_batch_equals_its_seeds_run_alone(pipes, sampler):
    ours, _ = pipes
    batch = ours("a red apple", steps=3, guidance=5.0, seed=20, num_images=3, scheduler=sampler)
    alone = [ours("a red apple", steps=3, guidance=5.0, seed=20 + k, scheduler=sampler)[0] for k in range(3)]
    assert max_pixel_diff(batch, alone) <= 1  # the UNet's batched arithmetic, not the noise
    assert max_pixel_diff(batch[:1], batch[1:2]) > 1, "different seeds must give different images"


def test_dpmpp_2m_automatic_is_karras_as_in_a1111(pipes):
    ours, _ = pipes
    run = lambda **kw: ours("a red apple", steps=4, guidance=5.0, seed=3, **kw)  # noqa: E731
    automatic = run(scheduler="DPM++ 2M")
    assert max_pixel_diff(automatic, run(scheduler="dpm++2m_karras")) == 0
    assert max_pixel_diff(automatic, run(scheduler="dpm++2m", schedule="Karras")) == 0
    assert max_pixel_diff(automatic, run(scheduler="dpm++2m", schedule="uniform")) > 1


@pytest.mark.parametrize(
    "sampler, options",
    [("ddim", {"eta": 0.7}), ("euler", {"s_churn": 1.0, "s_noise": 0.5}), ("dpm++sde", {"s_noise": 0.5})],
)
def test_options_reach_the_steps(pipes, sampler, options):
    ours, ref = pipes
    mine = ours("a red apple", steps=3, guidance=5.0, seed=7, scheduler=sampler, **options)
    assert max_pixel_diff(mine, reference(ref, ours, sampler, "automatic", 7, 1, **options)) <= 1
    plain = ours("a red apple", steps=3, guidance=5.0, seed=7, scheduler=sampler)
    assert max_pixel_diff(mine, plain) > 1, "the option must change the image"
    assert mine[0].info["latentdiff"]["scheduler"] == sampler
    assert all(mine[0].info["latentdiff"][k] == v for k, v in options.items())


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"scheduler": "warp drive"}, ["unknown scheduler 'warp drive'", "euler_a (Euler a)", "DPM++ 2M Karras"]),
        ({"scheduler": "DPM fast"}, ["'DPM fast' has no exact diffusers", "A1111's own", "--noise comfy", "dpm++2m"]),
        ({"scheduler": "euler", "schedule": "zigzag"}, ["unknown schedule type 'zigzag'", "karras (Karras)"]),
        ({"scheduler": "ddim", "schedule": "karras"}, ["'Karras' does not run with DDIM", "SGM Uniform"]),
        ({"scheduler": "euler", "schedule": "Align Your Steps"}, ["'Align Your Steps' does not run in", "KL Optimal"]),
        ({"scheduler": "ddim", "schedule": "kl_optimal"}, ["'KL Optimal' does not run with DDIM", "SGM Uniform"]),
        ({"scheduler": "DPM++ 2M Karras", "schedule": "beta"}, ["names schedule 'karras'"]),
        ({"scheduler": "euler_a", "eta": 0.5}, ["eta applies to the samplers DDIM, TCD"]),
        ({"scheduler": "euler", "schedule": 3}, ["the schedule type must be a name (a string), got '3'"]),
        ({"scheduler": "ddim", "eta": "a lot"}, ["eta must be a number >= 0, got 'a lot'"]),
        ({"scheduler": "euler", "s_noise": float("nan")}, ["s_noise must be a number >= 0, got 'nan'"]),
    ],
)
def test_bad_choices_are_one_line_naming_the_choices(pipes, kwargs, words):
    ours, _ = pipes
    with pytest.raises(UsageError) as e:
        ours("x", steps=1, **kwargs)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_the_sigma_lists_follow_a1111s_rules():
    """A1111 1.10's formulas (modules/sd_schedulers.py) on the SD sigmas, checked by their defining
    properties: endpoints, spacing in timestep, and Polyexponential at rho 1 = Exponential."""
    import numpy as np

    acp = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear").alphas_cumprod.numpy()
    model = ((1 - acp) / acp) ** 0.5
    n = 4
    assert FUNCTIONS["simple"](n, model) == [float(model[i]) for i in (999, 749, 499, 249)] + [0.0]
    assert FUNCTIONS["ddim"](n, model) == [float(model[i]) for i in (751, 501, 251, 1)] + [0.0]
    normal = FUNCTIONS["normal"](n, model)
    assert np.allclose(normal[0], model[-1]) and np.allclose(normal[-2], model[0]) and normal[-1] == 0
    kl = FUNCTIONS["kl_optimal"](n, model)
    assert len(kl) == n + 1 and np.allclose([kl[0], kl[-1]], [model[-1], model[0]])
    assert np.allclose(np.diff(np.arctan(kl)), np.diff(np.arctan(kl))[0])  # even in arctan sigma
    exponential = np.exp(np.linspace(np.log(model[-1]), np.log(model[0]), n))
    assert np.allclose(FUNCTIONS["polyexponential"](n, model)[:-1], exponential)
