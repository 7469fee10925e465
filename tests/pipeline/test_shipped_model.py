"""The model shipped in checkpoints/emoji: small, loads in diffusers with the same pixels, and
is what `latentdiff generate` uses when no --model is given."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from latentdiff import Pipeline
from latentdiff.models.hub import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def shipped():
    assert (DEFAULT_MODEL_DIR / "model_index.json").is_file(), "the default model must be committed"
    pipe = Pipeline.from_pretrained(None, device="cpu")
    pipe.progress = False
    return pipe


def test_size_limit_fp16_and_model_card():
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 1024 * 1024
    from safetensors import safe_open

    for f in DEFAULT_MODEL_DIR.rglob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            assert all(st.get_slice(k).get_dtype() == "F16" for k in st.keys()), f
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    for word in ("OFL", "Apache", "top-1", "guidance", "configs/"):
        assert word in card
    defaults = json.loads((DEFAULT_MODEL_DIR / "latentdiff.json").read_text())
    assert defaults["steps"] >= 1 and defaults["guidance"] > 1


def test_same_image_in_diffusers(shipped):
    from diffusers import StableDiffusionPipeline

    ref = StableDiffusionPipeline.from_pretrained(
        DEFAULT_MODEL_DIR, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ours = Pipeline.from_pretrained(None, device="cpu", dtype="fp32")
    ours.progress = False
    d = ours.defaults()
    mine = ours("red apple", seed=5)[0]
    theirs = ref(
        "red apple",
        num_inference_steps=d["steps"],
        guidance_scale=d["guidance"],
        generator=[torch.Generator("cpu").manual_seed(5)],
    ).images[0]
    assert np.abs(np.asarray(mine, dtype=int) - np.asarray(theirs, dtype=int)).max() <= 1


def test_any_text_tokenizes(shipped):
    tok = shipped.components.tokenizer
    for text in ("red apple", "zyxwvut qqq", "日本の富士山", "🍎"):
        ids = tok(text, add_special_tokens=False).input_ids
        assert len(ids) > 0, text
    assert shipped("zyxwvut qqq 日本", steps=2)[0].size == (64, 64)


def test_quick_start_command(tmp_path):
    r = run_cli("generate", "cat face", "--quiet", cwd=tmp_path)  # drawn well: tests/sampling/test_schedulers.py
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "outputs/cat-face-s0-0000.png"
    assert (tmp_path / "outputs" / "cat-face-s0-0000.png").is_file()
