"""The Pipeline API: seeds, defaults, metadata, long prompts, bad input, NaN decodes."""

import numpy as np
import pytest
import torch

from latentdiff import LatentDiffError, Pipeline, UsageError
from latentdiff.prompts.chunks import tokenize


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def close(a, b) -> bool:
    """Equal up to GEMM rounding across batch sizes: at most 1/255 on under 1% of pixels."""
    d = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
    return d.max() <= 1 and (d > 0).mean() < 0.01


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a", "ddpm"])
def test_image_k_equals_seed_plus_k_alone(pipe_sd1, scheduler):
    batch = pipe_sd1("a red apple", steps=3, seed=40, num_images=3, scheduler=scheduler)
    alone = pipe_sd1("a red apple", steps=3, seed=42, num_images=1, scheduler=scheduler)
    assert close(batch[2], alone[0])
    assert not same(batch[0], batch[1])


def test_batches_split_by_max_batch_give_the_same_images(pipe_sd1):
    whole = pipe_sd1("a red apple", steps=2, seed=0, num_images=3, scheduler="euler_a")
    pipe_sd1.max_batch = 2
    try:
        split = pipe_sd1("a red apple", steps=2, seed=0, num_images=3, scheduler="euler_a")
    finally:
        pipe_sd1.max_batch = 8
    assert all(close(a, b) for a, b in zip(whole, split))


def test_prompt_list_gives_one_image_per_prompt_and_seed(pipe_sd1):
    imgs = pipe_sd1(["a red apple", "photo of a cat"], steps=2, seed=7, num_images=2)
    assert [im.info["latentdiff"]["prompt"] for im in imgs] == ["a red apple"] * 2 + ["photo of a cat"] * 2
    assert [im.info["latentdiff"]["seed"] for im in imgs] == [7, 8, 9, 10]
    assert close(imgs[2], pipe_sd1("photo of a cat", steps=2, seed=9)[0])


def test_parameters_recorded_on_each_image(pipe_sd1, tiny_sd1):
    im = pipe_sd1("a red apple", negative_prompt="pear", steps=2, guidance=3.5, seed=None)[0]
    p = im.info["latentdiff"]
    assert isinstance(p["seed"], int) and p["seed"] >= 0
    assert (p["prompt"], p["negative_prompt"], p["steps"], p["guidance"]) == ("a red apple", "pear", 2, 3.5)
    assert (p["width"], p["height"], p["dtype"], p["device"]) == (64, 64, "fp32", "cpu")
    assert p["model"] == str(tiny_sd1.resolve()) and len(p["model_hash"]) == 12
    assert p["versions"]["torch"] == torch.__version__
    assert "Seed: " in im.info["parameters"]
    again = pipe_sd1("a red apple", negative_prompt="pear", steps=2, guidance=3.5, seed=p["seed"])[0]
    assert same(im, again)


def test_model_defaults_and_native_size(tiny_sd2, pipe_sd1):
    pipe = Pipeline.from_pretrained(tiny_sd2, device="cpu", dtype="fp32")
    pipe.progress = False
    p = pipe("x")[0].info["latentdiff"]
    assert (p["steps"], p["guidance"]) == (3, 4.0)  # from the model's latentdiff.json
    p = pipe_sd1("x", steps=1)[0].info["latentdiff"]
    assert p["guidance"] == 7.5 and (p["width"], p["height"]) == (64, 64)


def test_non_square_size(pipe_sd1):
    im = pipe_sd1("x", steps=1, width=48, height=32)[0]
    assert im.size == (48, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 50}, "not a multiple of 4; try 48 or 52"),
        ({"height": 2}, "height must be >= 4, got 2"),
        ({"steps": 0}, "steps must be"),
        ({"guidance": -0.5}, "guidance must be >= 0"),
        ({"num_images": 0}, "num_images must be"),
        ({"scheduler": "k_warp"}, "unknown scheduler .k_warp.; choose one of: euler_a"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_input_is_a_usage_error(pipe_sd1, kwargs, message):
    with pytest.raises(UsageError, match=message):
        pipe_sd1("x", **kwargs)


def test_long_prompt_is_chunked_not_truncated(pipe_sd1):
    c = pipe_sd1.components
    long = "a red apple " * 40
    n_tokens = len(c.tokenizer(long, add_special_tokens=False).input_ids)
    chunks = -(-n_tokens // 75)
    assert chunks >= 2
    ids = tokenize(c.tokenizer, [long, ""])
    assert ids.shape == (2, chunks, 77)
    assert (ids[:, :, 0] == c.tokenizer.bos_token_id).all()
    cond, uncond = pipe_sd1.conditioning([long], [""], 64, 64)
    assert cond.hidden.shape == uncond.hidden.shape == (1, chunks * 77, 32)
    head = pipe_sd1(long, steps=2)[0]
    tail_changed = pipe_sd1(long + " photo of a cat", steps=2)[0]
    assert not same(head, tail_changed), "words past token 77 must still matter"


def test_short_prompt_uses_the_plain_clip_window(pipe_sd1):
    c = pipe_sd1.components
    ids = tokenize(c.tokenizer, ["a red apple"])
    ref = c.tokenizer(["a red apple"], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(ids[:, 0], ref.input_ids)


def test_nan_decode_is_redone_in_fp32_with_a_warning(tiny_sd1):
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="bf16")
    pipe.progress = False
    vae = pipe.components.vae
    real = vae.decode

    def flaky(z, *a, **k):  # overflow only in low precision, as fp16 VAEs do
        out = real(z, *a, **k)
        if z.dtype != torch.float32:
            out.sample.fill_(float("nan"))
        return out

    vae.decode = flaky
    with pytest.warns(UserWarning, match="redoing it in fp32"):
        im = pipe("x", steps=1)[0]
    assert np.asarray(im).std() > 0
    assert vae.dtype == torch.bfloat16


def test_nan_decode_in_fp32_fails_clearly(pipe_sd1, monkeypatch):
    vae = pipe_sd1.components.vae
    real = vae.decode

    def broken(z, *a, **k):
        out = real(z, *a, **k)
        out.sample.fill_(float("inf"))
        return out

    monkeypatch.setattr(vae, "decode", broken)
    with pytest.raises(LatentDiffError, match="NaN/inf"):
        pipe_sd1("x", steps=1)


def test_save_pretrained_round_trip(pipe_sd1, tmp_path):
    out = pipe_sd1.save_pretrained(tmp_path / "copy")
    again = Pipeline.from_pretrained(out, device="cpu", dtype="fp32")
    again.progress = False
    assert same(pipe_sd1("x", steps=2)[0], again("x", steps=2)[0])
