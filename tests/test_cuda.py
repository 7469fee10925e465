"""CUDA: precision, compile, the NaN guard and fine-tuning on a GPU. Marked `gpu`: skipped with the
reason where torch sees no CUDA device; run with `python -m pytest -m gpu tests/test_cuda.py`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from latentdiff import Pipeline

from conftest import run_cli

pytestmark = pytest.mark.gpu
MIN_PSNR_DB = {"fp16": 40.0, "bf16": 35.0}  # vs the fp32 CUDA image of the same seed


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make(model, dtype, compile=False):
    p = Pipeline.from_pretrained(model, device="cuda", dtype=dtype, compile=compile)
    p.progress = False
    return p


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_is_close_to_fp32(tiny_sd1, dtype):
    ref = make(tiny_sd1, "fp32")("a red apple", steps=4, seed=3, num_images=2)
    low = make(tiny_sd1, dtype)("a red apple", steps=4, seed=3, num_images=2)
    for a, b in zip(ref, low):
        assert np.asarray(a).std() > 5 and psnr(a, b) >= MIN_PSNR_DB[dtype]
    assert low[0].info["latentdiff"]["dtype"] == dtype


def test_compiled_matches_eager(tiny_sd1):
    eager = make(tiny_sd1, "fp16")("a red apple", steps=4, seed=1)[0]
    compiled = make(tiny_sd1, "fp16", compile=True)("a red apple", steps=4, seed=1)[0]
    assert np.abs(np.asarray(eager, dtype=int) - np.asarray(compiled, dtype=int)).max() <= 1


def test_vae_overflow_is_redone_in_fp32(tiny_sd1):
    p = make(tiny_sd1, "fp16")
    vae = p.components.vae
    vae.config.force_upcast = False
    vae.to(torch.float16)
    with torch.no_grad():  # a weight so large that fp16 activations overflow to inf
        vae.decoder.conv_in.weight.mul_(6e4)
    with pytest.warns(UserWarning, match="redoing it in fp32"):
        img = p("a red apple", steps=2, seed=0)[0]
    assert np.isfinite(np.asarray(img, dtype=float)).all()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for i, c in enumerate(["red", "green", "blue", "yellow"]):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).ellipse((8, 8, 56, 56), fill=c)
        im.save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {c} circle")
    return root


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("precision", ["no", "fp16", "bf16"])
def test_finetune_and_resume_on_cuda(dataset, tiny_sd1, tmp_path, method, precision):
    out = tmp_path / "run"
    args = ["finetune", dataset, "--model", tiny_sd1, "--out", out, "--method", method, "--batch-size", "2",
            "--resolution", "64", "--checkpoint-every", "2", "--mixed-precision", precision]
    first = run_cli(*args, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_cli(*args, "--max-steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4 and all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
    image = make(out, "fp16")("a red circle", steps=2, seed=0)[0]
    assert np.asarray(image).std() > 1
