"""ComfyUI's noise (sampling/noise.py): rows of one torch.randn of the whole batch latent drawn from
torch.manual_seed(seed), checked against that call itself; a batch of 2 through the pipeline is that
noise, and replaying one row alone gives its image; the mode's checks."""

import numpy as np
import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.sampling.noise import comfy_batch_noise


def oracle(seed: int, shape: tuple) -> torch.Tensor:
    """What ComfyUI's prepare_noise does for a latent without batch_index."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        return torch.randn(shape, generator=generator, device="cpu")


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 3, 5), (16, 1, 1), (1, 1, 7)])
@pytest.mark.parametrize("rows", [[0], [2], [1, 2], [0, 1, 2, 3]])
def test_rows_are_the_batch_draw(shape, rows):
    """Any rows, also where a row is no multiple of 16 values (there the whole batch is drawn)."""
    expected = oracle(123456789012, (4, *shape))[rows]
    assert torch.equal(comfy_batch_noise(shape, 123456789012, rows, 4), expected)


def test_image_k_is_not_seed_plus_k():
    batch = oracle(5, (2, 4, 8, 8))
    assert torch.equal(batch[0], oracle(5, (1, 4, 8, 8))[0])
    assert not torch.equal(batch[1], oracle(6, (1, 4, 8, 8))[0])


def test_the_loop_starts_from_the_batch_draw(pipe_sd1):
    """The latents a run starts from are the batch's draw times the scheduler's initial sigma, a row
    asked for alone its row; step noise comes from one generator of the seed for the whole batch."""
    from latentdiff.sampling.loop import make_scheduler
    from latentdiff.sampling.noise import ComfyNoise
    from latentdiff.workflows.start import prepare

    side = 64 // pipe_sd1.scale_factor
    sched = make_scheduler(pipe_sd1.components.scheduler_config, "euler_a")
    sched.set_timesteps(2)
    both = prepare(pipe_sd1, sched, [77, 77], 2, (64, 64), comfy=ComfyNoise(77, (0, 1), 2))
    assert torch.equal(both.latents, oracle(77, (2, 4, side, side)) * sched.init_noise_sigma)
    second = prepare(pipe_sd1, sched, [77], 2, (64, 64), comfy=ComfyNoise(77, (1,), 2))
    assert torch.equal(second.latents[0], both.latents[1])
    (g,) = both.generators
    assert g.initial_seed() == 78  # ComfyUI's 2026 code seeds its step noise seed + 1 on a CPU


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise": "gpu"}, "unknown noise 'gpu'"),
        ({"noise": "comfy", "noise_batch": 1, "num_images": 2}, "lie outside a batch of 1"),
        ({"noise": "comfy", "noise_index": -1}, "noise_index"),
        ({"noise": "comfy", "noise_batch": 10**6}, "noise_batch"),
        ({"noise": "comfy", "hires": 2.0}, "no hires fix"),
    ],
)
def test_bad_noise_settings_are_one_error(pipe_sd1, kwargs, message):
    with pytest.raises(UsageError, match=message):
        pipe_sd1("x", steps=1, width=64, height=64, **kwargs)


def test_step_noise_draws_the_batch_from_one_generator_of_the_seed(tiny_sd1, pipe_sd1):
    """A sampler off ComfyUI's own path (TCD: diffusers' class, gamma 0.3) with ComfyUI's noise is diffusers'
    pipeline given ComfyUI's initial noise and ONE generator of seed + 1 for the batch (ComfyUI's 2026 code's
    default noise sampler on a CPU: each step draws the whole batch), not a generator per image."""
    from diffusers import StableDiffusionPipeline

    from latentdiff.sampling.loop import make_scheduler

    kw = {"steps": 3, "guidance": 5.0, "width": 64, "height": 64, "scheduler": "tcd"}
    ours = pipe_sd1("a red square", seed=11, num_images=2, noise="comfy", **kw)
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(pipe_sd1.components.scheduler_config, kw["scheduler"])
    side = 64 // pipe_sd1.scale_factor
    theirs = ref(
        "a red square",
        latents=oracle(11, (2, 4, side, side)),
        generator=torch.Generator().manual_seed(12),
        num_inference_steps=3,
        eta=0.3,  # TCD's gamma: diffusers' pipeline passes its eta (0 by default) to the step
        guidance_scale=5.0,
        num_images_per_prompt=2,
        height=64,
        width=64,
    ).images
    diff = max(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() for a, b in zip(ours, theirs))
    assert diff <= 1


def test_sde_batch_shares_one_brownian_tree(pipe_sd1):
    from latentdiff.sampling.loop import make_scheduler, seed_per_image

    sched = make_scheduler(pipe_sd1.components.scheduler_config, "dpm++sde")
    seed_per_image(sched, [torch.Generator().manual_seed(9)], 2)  # ComfyUI's: one generator, a batch of 2
    assert sched.noise_sampler_seed == 9
    seed_per_image(sched, [torch.Generator().manual_seed(s) for s in (9, 10)], 2)  # ours: a tree per image
    assert sched.noise_sampler_seed == [9, 10]
