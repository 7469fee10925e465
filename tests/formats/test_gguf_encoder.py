"""A T5 text encoder as GGUF (city96's t5-v1_1-xxl-encoder-gguf, as ComfyUI-GGUF's CLIPLoaderGGUF reads it) in
ComfyUI's models/text_encoders: found by its architecture (t5encoder), read by transformers' GGUF loader
(dequantized to float32) and built as T5 v1.1 (gated-gelu) from its tensors' shapes. Tested on the tiny Flux.1
ComfyUI tree with its scaled-fp8 T5 replaced by a Q8_0 GGUF of the same T5: the weights within Q8_0's error of
the T5's (0.45% of each tensor's largest value: half a 1/127 step plus the fp16 scale's rounding), and the image that of the diffusers folder holding the
dequantized weights exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from comfy_tree import write_comfy_tree
from test_comfy_components import _pixels

pytest.importorskip("gguf", reason="the gguf extra (latentdiff[gguf]) is not installed")


@pytest.fixture(scope="module")
def gguf_tree(tmp_path_factory):
    from latentdiff.formats.gguf_file import write_t5_gguf

    root = tmp_path_factory.mktemp("ComfyUI")
    parts, flux_file = write_comfy_tree(root)
    t5_dir = root / "models" / "text_encoders"
    (t5_dir / "t5xxl_fp8_e4m3fn_scaled.safetensors").unlink()
    write_t5_gguf(t5_dir / "t5-v1_1-xxl-encoder-Q8_0.gguf", parts["text_encoder_2"])
    return root, parts, flux_file


def test_a_gguf_t5_in_comfyui_text_encoders(gguf_tree, tmp_path):
    from latentdiff import Pipeline
    from latentdiff.families.flux_tiny import SCHEDULERS
    from latentdiff.models.components import Components, save_components

    root, parts, f = gguf_tree
    loaded = Pipeline.from_pretrained(f, device="cpu", dtype="fp32", components=root / "models")
    got, want = loaded.components.text_encoder_2.state_dict(), parts["text_encoder_2"].state_dict()
    for k, v in want.items():  # half a 1/127 step plus the fp16 scale's rounding: 0.45% of the largest value
        assert (got[k] - v).abs().max() <= 0.0045 * v.abs().max(), k
    assert any(not torch.equal(got[k], v) for k, v in want.items())  # quantized, not the same values
    t5 = type(parts["text_encoder_2"])(parts["text_encoder_2"].config).eval()
    t5.load_state_dict(got)
    scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULERS["flux-dev"]}
    ref = Components(**{**parts, "text_encoder_2": t5}, scheduler_config=scheduler, defaults={})
    save_components(ref, tmp_path / "ref", scheduler["_class_name"])
    want_pixels = _pixels(Pipeline.from_pretrained(tmp_path / "ref", device="cpu", dtype="fp32"))
    assert np.array_equal(_pixels(loaded), want_pixels) and want_pixels.std() > 5


def test_a_damaged_gguf_encoder_is_one_line(gguf_tree, tmp_path, run_main):
    root = tmp_path / "ComfyUI"
    shutil.copytree(gguf_tree[0], root)
    gguf = root / "models" / "text_encoders" / "t5-v1_1-xxl-encoder-Q8_0.gguf"
    gguf.write_bytes(gguf.read_bytes()[:200])
    model = root / "models" / "diffusion_models" / "flux1-dev.safetensors"
    code, out, err = run_main(["generate", "x", "--model", model, "--components", root / "models", "--steps", "1",
                               "--width", "16", "--height", "16", "--quiet", "--out", tmp_path / "o"])  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "holds no T5-XXL file" in err, err
    assert not (tmp_path / "o").exists()
