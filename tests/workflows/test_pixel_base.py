"""A pixel base folder (DeepFloyd IF's stage I layout) as `generate --model`: the one loop draws the image
itself (PixelSpace where the VAE sits), equal to diffusers' IFPipeline given our prompt embeddings, and
the folder's own cascade (latentdiff.json) runs after it, each stage recorded and replayed by --from."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import png_texts
from PIL import Image


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("pixel") / "base", "if-base", seed=0, defaults={"steps": 3})


@pytest.fixture(scope="module")
def with_cascade(base, tmp_path_factory):
    from latentdiff.models.testing import make_tiny_pixel_sr

    root = tmp_path_factory.mktemp("pixel") / "cascade"
    shutil.copytree(base, root)
    make_tiny_pixel_sr(root / "stage2", 32, seed=1, defaults={"steps": 2, "guidance": 1.0})
    (root / "latentdiff.json").write_text(json.dumps({"steps": 2, "cascade": [{"path": "stage2", "noise_level": 30}]}))
    return root


@pytest.mark.parametrize("guidance", [4.0])  # CFG (guidance 1 too, when measured: 0/255)
def test_base_matches_if_pipeline(base, guidance):
    from diffusers import IFPipeline

    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(base)
    got = np.asarray(pipe("a red apple", "blue", steps=3, guidance=guidance, seed=5, upscale=False)[0], dtype=float)
    cond, uncond = pipe.conditioning(["a red apple"], ["blue"], 16, 16)
    ref = IFPipeline.from_pretrained(base, text_encoder=None, tokenizer=None)
    ref.set_progress_bar_config(disable=True)
    out = ref(prompt_embeds=cond.hidden, negative_prompt_embeds=uncond.hidden, num_inference_steps=3,
              guidance_scale=guidance, generator=torch.Generator().manual_seed(5), output_type="np").images  # fmt: skip
    want = np.round(out[0] * 255)
    assert got.shape == want.shape == (16, 16, 3) and want.std() > 5
    assert np.abs(got - want).max() <= 1


def test_generate_runs_the_folders_cascade(generate, run_main, with_cascade, tmp_path):
    code, out, err = generate(with_cascade, tmp_path / "a", "--seed", "2")
    assert code == 0, err
    path = out.strip()
    assert Image.open(path).size == (32, 32)
    record, _ = png_texts(path)
    stage = record["cascade"][0]
    assert stage["path"] == str((with_cascade / "stage2").resolve())
    assert (stage["steps"], stage["noise_level"], stage["size"]) == (2, 30, [32, 32])
    code, again, err = run_main(["generate", "--from", path, "--out", str(tmp_path / "c"), "--quiet"])
    assert code == 0 and np.array_equal(np.asarray(Image.open(again.strip())), np.asarray(Image.open(path)))


def test_a_stage_that_does_not_chain_is_one_line(generate, with_cascade, tmp_path):
    code, out, err = generate(with_cascade, tmp_path, "--width", "24", "--height", "24")
    assert code == 2 and "do not chain" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_a_pixel_base_on_t5_is_refused_in_one_line(base, generate, tmp_path):
    """DeepFloyd IF's own stage I reads T5 embeddings; our pixel family reads CLIP's."""
    folder = tmp_path / "t5"
    shutil.copytree(base, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "text_encoder": ["transformers", "T5EncoderModel"]}))
    code, out, err = generate(folder, tmp_path / "o")
    assert code == 2 and "T5EncoderModel" in err.strip().splitlines()[-1] and "Traceback" not in err
