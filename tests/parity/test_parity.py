"""Our loop against diffusers.StableDiffusionPipeline on the same weights: within 1/255."""

import numpy as np
import pytest
import torch
from helpers import max_pixel_diff, paired

from latentdiff.sampling.loop import make_scheduler

# The ten methods latentdiff had before the sampler x schedule table (tests/parity/test_samplers.py
# checks the others, and every schedule type, on SD1; tests/families/test_sdxl.py all on SDXL).
TEN = ["ddim", "ddpm", "pndm", "euler", "euler_a", "heun", "lms", "dpm++2m", "dpm++2m_karras", "unipc"]


@pytest.fixture(scope="module")
def pipes(tiny_sd1, tiny_sd2):
    return paired({"sd1": tiny_sd1, "sd2": tiny_sd2}, "StableDiffusionPipeline")


def reference(ref, ours, prompt, scheduler, steps, guidance, seed, n, negative=""):
    ref.scheduler = make_scheduler(ours.components.scheduler_config, scheduler)
    gens = [torch.Generator("cpu").manual_seed(seed + k) for k in range(n)]
    return ref(
        prompt,
        negative_prompt=negative or None,
        num_inference_steps=steps,
        guidance_scale=guidance,
        num_images_per_prompt=n,
        generator=gens,
    ).images


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
@pytest.mark.parametrize("scheduler", TEN)
@pytest.mark.parametrize("guidance", [1.0, 6.0])
def test_matches_diffusers(pipes, kind, scheduler, guidance):
    ours, ref = pipes[kind]
    mine = ours("a red apple", steps=4, guidance=guidance, seed=11, num_images=2, scheduler=scheduler)
    theirs = reference(ref, ours, "a red apple", scheduler, 4, guidance, 11, 2)
    assert np.asarray(mine[0]).std() > 5, "a flat image would make this comparison meaningless"
    assert max_pixel_diff(mine, theirs) <= 1


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_matches_diffusers_with_negative_prompt(pipes, kind):
    ours, ref = pipes[kind]
    mine = ours("photo of a cat", negative_prompt="blue sky", steps=3, guidance=7.0, seed=2, scheduler="euler_a")
    theirs = reference(ref, ours, "photo of a cat", "euler_a", 3, 7.0, 2, 1, negative="blue sky")
    without = ours("photo of a cat", steps=3, guidance=7.0, seed=2, scheduler="euler_a")
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, without) > 1, "the negative prompt must change the image"


def test_default_scheduler_is_the_models_own(pipes):
    ours, ref = pipes["sd1"]
    mine = ours("a red apple", steps=3, guidance=3.0, seed=0)
    ref.scheduler = make_scheduler(ours.components.scheduler_config)
    theirs = ref(
        "a red apple", num_inference_steps=3, guidance_scale=3.0, generator=[torch.Generator("cpu").manual_seed(0)]
    ).images
    assert max_pixel_diff(mine, theirs) <= 1
