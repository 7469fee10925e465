"""Prompt editing and alternation through the pipeline, on the tiny SD1 model: the equalities the
issue names hold to the bit, a real schedule changes the picture, `plain` leaves the text alone, and
the hires pass gets its own schedule."""

from __future__ import annotations

import numpy as np
import pytest

from latentdiff.families.prompt_schedule import scheduled_conditioning
from latentdiff.sampling.model_call import StepContexts


def px(pipe, prompt, **kw):
    kw = {"steps": 4, "seed": 3, "width": 64, "height": 64, "prompt_syntax": "a1111", **kw}
    return np.asarray(pipe(prompt, **kw)[0], dtype=np.int16)


@pytest.mark.parametrize(
    ("edited", "plain"),
    [("[red cat:blue dog:0]", "blue dog"), ("[red cat:blue dog:4]", "red cat"), ("[red cat|red cat]", "red cat")],
)
def test_degenerate_edits_are_their_text(pipe_sd1, edited, plain):
    assert np.array_equal(px(pipe_sd1, edited), px(pipe_sd1, plain))


def test_an_edit_changes_the_picture_and_plain_reads_text(pipe_sd1):
    edited = px(pipe_sd1, "[red cat:blue dog:2]")
    assert not np.array_equal(edited, px(pipe_sd1, "red cat"))
    assert not np.array_equal(edited, px(pipe_sd1, "blue dog"))
    literal = px(pipe_sd1, "[red cat:blue dog:2]", prompt_syntax="plain")
    assert not np.array_equal(literal, edited)


def test_each_distinct_text_is_encoded_once(pipe_sd1):
    seen = []

    def conditioning(prompts, negatives, *args):
        seen.append((list(prompts), negatives))
        return pipe_sd1.conditioning(prompts, negatives, *args)

    cond, uncond = scheduled_conditioning(
        conditioning, ["[a|b] x", "[a|b] x", "c"], ["[n:m:2]"] * 3, 64, 64, "a1111", 1, steps=4
    )
    assert seen == [(["a x", "b x", "c"], ["n", "m"])]
    assert isinstance(cond, StepContexts) and cond.starts == (0, 2, 3, 4)
    assert isinstance(uncond, StepContexts) and uncond.starts == (0, 2, 3, 4)
    # step 2 (from 0): alternation's second option, the negative still `n` (2 <= end 2)
    emb, _ = pipe_sd1.conditioning(["b x", "n"], None, 64, 64, "a1111", 1)
    assert np.array_equal(cond.at(2).hidden[0].numpy(), emb.hidden[0].numpy())
    assert np.array_equal(uncond.at(2).hidden[0].numpy(), emb.hidden[1].numpy())


@pytest.mark.slow
def test_hires_pass_has_its_own_schedule(pipe_sd1):
    """`[a:b:1.5]` switches half-way through the hires steps; in the first pass it stays `a`."""
    kw = {"hires": 1.5, "hires_steps": 4, "hires_strength": 1.0, "hires_upscaler": "latent"}
    edited = px(pipe_sd1, "[red cat:blue dog:1.5]", **kw)
    assert not np.array_equal(edited, px(pipe_sd1, "red cat", **kw))
    # a fraction below 1 is over before the hires pass: the hires pass reads `b` throughout
    both = px(pipe_sd1, "[red cat:blue dog:0.9]", **kw)
    assert not np.array_equal(both, edited)


def test_and_with_a_zero_weight_is_the_prompt_alone(pipe_sd1):
    assert np.array_equal(px(pipe_sd1, "red cat AND red cat:0"), px(pipe_sd1, "red cat"))


def test_and_combines_the_sub_prompts_in_one_batched_call(pipe_sd1, monkeypatch):
    """`a AND b :0.5`: image rows [uncond, a, b] go through the UNet together each step, and the
    prediction is eps_u + g (1 (eps_a - eps_u) + 0.5 (eps_b - eps_u))."""
    from latentdiff.families import unet

    batches = []
    call = unet.UNetCall.__call__

    def spy(self, x, t, inputs):
        out = call(self, x, t, inputs)
        batches.append((x.shape[0], out))
        return out

    monkeypatch.setattr(unet.UNetCall, "__call__", spy)
    composed = px(pipe_sd1, "red cat AND blue dog :0.5", steps=2, guidance=7.0)
    assert batches and {b for b, _ in batches} == {3}  # one call per evaluation: 1 unconditional + 2 conditional rows
    assert not np.array_equal(composed, px(pipe_sd1, "red cat", steps=2, guidance=7.0))


def test_guide_is_a1111s_combination():
    import torch

    from latentdiff.sampling.model_call import Composed, Inputs, guided

    ctx = torch.zeros(3, 1, 1)

    class Ctx:
        def __init__(self, rows):
            self.rows = rows

        def cat(self, other):
            return Ctx(self.rows + other.rows)

    inputs = guided(Inputs(Composed(Ctx(2), (((0, 1.0), (1, 0.5)),))), Inputs(Ctx(1)))
    eps_u, eps_a, eps_b = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([5.0])
    out = inputs.guide(torch.stack([eps_u, eps_a, eps_b]), 2.0)
    assert torch.equal(out, (eps_u + 2.0 * (1.0 * (eps_a - eps_u) + 0.5 * (eps_b - eps_u)))[None])
    assert inputs.rows(torch.ones(1, 4)).shape == (3, 4)
    del ctx


def test_from_replays_the_schedule(tiny_sd1, tmp_path):
    """The PNG records the prompt as written, its syntax and steps: --from gives the same pixels."""
    from PIL import Image

    from latentdiff.cli.main import main

    prompt = "[red cat:blue dog:0.5] AND [a|b] :0.5"
    common = ["--steps", "3", "--width", "64", "--height", "64", "--device", "cpu", "--quiet"]
    assert main(["generate", prompt, "--model", str(tiny_sd1), "--out", str(tmp_path / "a"), *common]) == 0
    (png,) = (tmp_path / "a").glob("*.png")
    assert main(["generate", "--from", str(png), "--out", str(tmp_path / "b"), "--device", "cpu", "--quiet"]) == 0
    (again,) = (tmp_path / "b").glob("*.png")
    assert Image.open(png).info["latentdiff"] and np.array_equal(
        np.asarray(Image.open(png)), np.asarray(Image.open(again))
    )
    plain = tmp_path / "c"
    assert (
        main(["generate", prompt, "--model", str(tiny_sd1), "--out", str(plain), *common, "--prompt-syntax", "plain"])
        == 0
    )
    (literal,) = plain.glob("*.png")
    assert not np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(literal)))
