"""The Python API as diffusers users write it: diffusers' keyword names, generator=, .to(), and
the package's public names (issue 22)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import latentdiff
from latentdiff import Pipeline, UsageError


def gen(seed):
    return torch.Generator("cpu").manual_seed(seed)


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_diffusers_names_give_the_same_images_as_ours(pipe_sd1):
    ours = pipe_sd1("a cat", steps=2, guidance=3.0, num_images=2, seed=5)
    theirs = pipe_sd1(
        "a cat", num_inference_steps=2, guidance_scale=3.0, num_images_per_prompt=2, generator=[gen(5), gen(6)]
    )
    assert all(same(a, b) for a, b in zip(ours, theirs)) and len(theirs) == 2
    one = pipe_sd1("a cat", num_inference_steps=2, generator=gen(9))[0]
    assert one.info["latentdiff"]["seed"] == 9 and same(one, pipe_sd1("a cat", steps=2, seed=9)[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(generator=gen(1), num_images=2),
            "generator: one generator for 2 images draws them from one stream; pass seed",
        ),
        (dict(generator=[gen(1), gen(3)], num_images=2), "seeds [1, 3] are not consecutive; pass seed=N"),
        (dict(generator=[gen(1)], num_images=2), "1 generators for 2 images"),
        (dict(generator=7), "generator must be a torch.Generator or a list of them; pass seed=N"),
        (dict(generator=gen(1), seed=4), "give seed or generator, not both"),
        (dict(steps=2, num_inference_steps=3), "give steps or num_inference_steps, not both"),
    ],
)
def test_what_cannot_be_followed_exactly_is_refused_in_one_line(pipe_sd1, kwargs, message):
    with pytest.raises(UsageError) as e:
        pipe_sd1("a cat", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_used_generator_is_refused(pipe_sd1):
    g = gen(1)
    torch.randn(3, generator=g)
    with pytest.raises(UsageError, match="already drawn numbers cannot be replayed; pass seed=N"):
        pipe_sd1("a cat", generator=g)


def test_an_unknown_name_is_refused_naming_ours(pipe_sd1):
    with pytest.raises(UsageError) as e:
        pipe_sd1("a cat", output_type="pil")
    text = str(e.value)
    assert text.startswith("unknown option(s): output_type; Pipeline takes prompt, negative_prompt, steps, guidance")
    assert "num_inference_steps" in text and "hires" in text


def test_to_moves_and_casts_like_loading_in_that_dtype(tiny_sd1):
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    pipe.progress = False
    assert pipe.to(dtype="bf16") is pipe
    c = pipe.components
    assert pipe.dtype == c.unet.dtype == c.text_encoder.dtype == torch.bfloat16
    direct = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="bf16")
    direct.progress = False
    assert c.vae.dtype == direct.components.vae.dtype
    assert same(pipe("a cat", steps=2)[0], direct("a cat", steps=2)[0])
    pipe.to(torch.device("cpu"), torch.float32)
    assert c.unet.dtype == torch.float32 and pipe.device == torch.device("cpu")
    with pytest.raises(UsageError, match="unknown dtype"):
        pipe.to(dtype="float8")
    with pytest.raises(UsageError, match="unknown device"):
        pipe.to("gpu")


def test_dir_lists_the_public_names_without_importing_torch():
    code = (
        "import sys, latentdiff; print(sorted(set(latentdiff.__all__) - set(dir(latentdiff)))); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "False"]
    assert {"Pipeline", "GenerateConfig", "UsageError", "LatentDiffError"} <= set(latentdiff.__all__)
    assert all(getattr(latentdiff, name) is not None for name in latentdiff.__all__)
