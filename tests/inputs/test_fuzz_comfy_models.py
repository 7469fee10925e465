"""ComfyUI's models folder as --components fuzzed as the other model files are: one of its
encoder, VAE or tokenizer files special (FIFO, device, folder), truncated or with an oversized
header ends in images or in one line, nothing written."""

import shutil
import tempfile
from pathlib import Path

import pytest
from comfy_tree import write_comfy_tree
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import assert_clean, run_main
from test_fuzz_models import FUZZ, _bounded_memory, _damage  # noqa: F401 (a fixture)

PARTS = [
    "models/clip/my_clip.safetensors",
    "models/text_encoders/t5xxl_fp8_e4m3fn_scaled.safetensors",
    "models/vae/ae.safetensors",
    "comfy/text_encoders/t5_tokenizer/tokenizer.json",
]


@pytest.fixture(scope="module")
def comfy_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ComfyUI")
    write_comfy_tree(root)
    return root


@pytest.mark.slow
@settings(FUZZ, max_examples=10)
@given(
    data=st.data(),
    part=st.sampled_from(PARTS),
    how=st.sampled_from(["fifo", "device", "folder", "truncated", "oversized"]),
)
def test_fuzz_comfy_models_folder(comfy_tree, data, part, how):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ComfyUI"
        shutil.copytree(comfy_tree, root)
        refused = _damage(root / part, how, data)
        out = Path(tmp) / "o"
        model = root / "models" / "diffusion_models" / "flux1-dev.safetensors"
        argv = ["generate", "x", "--model", str(model), "--components", str(root / "models"), "--steps", "1"]
        code, stdout, err = run_main([*argv, "--width", "16", "--height", "16", "--quiet", "--out", str(out)])
        assert_clean(code, stdout, err, out)
        assert code != 0 or not refused, (part, how)
