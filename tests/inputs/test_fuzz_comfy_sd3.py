"""SD 3.5 from ComfyUI's models folder fuzzed as the Flux.1 tree is (test_fuzz_comfy_models.py): one of its
clip_l, clip_g, t5xxl or VAE files special (FIFO, device, folder), truncated or with an oversized header ends in
images or in one line, nothing written. A second SD3 VAE beside the first is one line naming both."""

import shutil
import tempfile
from pathlib import Path

import pytest
from comfy_sd3_tree import PARTS, SMALL_CLIP_G, TRANSFORMER, write_sd3_tree
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import assert_clean, run_main
from test_fuzz_models import FUZZ, _bounded_memory, _damage  # noqa: F401 (a fixture)

ARGS = ["--steps", "1", "--width", "16", "--height", "16", "--quiet"]


@pytest.fixture(scope="module")
def sd3_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ComfyUI")
    write_sd3_tree(root)
    return root


@pytest.fixture(autouse=True)
def _small_clip_g(monkeypatch):
    monkeypatch.setattr("latentdiff.formats.encoder_files.CLIP_G_WIDTH", SMALL_CLIP_G)


def _generate(root: Path, out: Path):
    argv = ["generate", "x", "--model", str(root / TRANSFORMER), "--components", str(root / "models"), *ARGS]
    return run_main([*argv, "--out", str(out)])


@pytest.mark.slow
@settings(FUZZ, max_examples=8)
@given(
    data=st.data(),
    part=st.sampled_from(PARTS),
    how=st.sampled_from(["fifo", "device", "folder", "truncated", "oversized"]),
)
def test_fuzz_comfy_sd3_parts(sd3_tree, data, part, how):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ComfyUI"
        shutil.copytree(sd3_tree, root)
        refused = _damage(root / part, how, data)
        out = Path(tmp) / "o"
        code, stdout, err = _generate(root, out)
        assert_clean(code, stdout, err, out)
        assert code != 0 or not refused, (part, how)


def test_two_vaes_are_one_line_naming_both(sd3_tree, tmp_path):
    root = tmp_path / "ComfyUI"
    shutil.copytree(sd3_tree, root)
    shutil.copy(root / PARTS[3], root / "models" / "vae" / "ae.safetensors")  # Flux.1's has the same tensors
    code, stdout, err = _generate(root, tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists(), err
    assert "2 16-channel VAE files" in err and "ae.safetensors" in err and "sd3.5_vae.safetensors" in err
    assert "--vae FILE" in err
