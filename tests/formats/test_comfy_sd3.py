"""SD 3.5 from ComfyUI's models folder (`--components ~/ComfyUI/models`): clip_l, clip_g and t5xxl files found by
their tensors in models/clip and models/text_encoders, SD3's VAE (the same tensors as Flux.1's ae.safetensors,
here kept in diffusers' layout as its repo ships it) taking SD3's scaling and shift because the transformer file is
SD3's, T5's tokenizer from the ComfyUI install. Each image equals the one of the diffusers folder made of the same
parts (that folder's pixels are held to StableDiffusion3Pipeline's in tests/parity/test_sd3.py), with and without
T5. The tree: tests/comfy_sd3_tree.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_sd3_tree import SMALL_CLIP_G, TRANSFORMER, write_sd3_tree


@pytest.fixture(scope="module")
def comfy_sd3(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui-sd3")
    return root, write_sd3_tree(root), root / TRANSFORMER


def _pipe(model, **kw):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", **kw)
    pipe.progress = False
    return pipe


def _pixels(pipe) -> np.ndarray:
    out = pipe("a red apple", "blue sky", steps=2, seed=4, width=32, height=32, guidance=4.0)
    return np.asarray(out[0], dtype=np.int16)


def _folder(parts: dict, out, t5: bool = True):
    from latentdiff.models.components import Components, save_components

    given = parts if t5 else {**parts, "text_encoder_3": None, "tokenizer_3": None}
    save_components(Components(**given, defaults={}), out, "FlowMatchEulerDiscreteScheduler")
    return out


@pytest.mark.parametrize("t5", [True, False])
def test_sd3_file_with_comfyui_models_folder_as_the_diffusers_folder(comfy_sd3, tmp_path, monkeypatch, t5):
    monkeypatch.setattr("latentdiff.formats.encoder_files.CLIP_G_WIDTH", SMALL_CLIP_G)
    root, parts, f = comfy_sd3
    models = root / "models"
    if not t5:  # a folder without T5 (ComfyUI's SD3 workflows run without it too)
        (models / "text_encoders" / "t5xxl_fp16.safetensors").rename(tmp_path / "t5xxl_fp16.safetensors")
    try:
        loaded = _pipe(f, components=models)
    finally:
        if not t5:
            (tmp_path / "t5xxl_fp16.safetensors").rename(models / "text_encoders" / "t5xxl_fp16.safetensors")
    c = loaded.components
    assert loaded.family.name == "sd3" and (c.text_encoder_3 is None) is (not t5)
    assert (c.vae.config.scaling_factor, c.vae.config.shift_factor) == (1.5305, 0.0609)  # SD3's, not Flux.1's
    assert torch.equal(c.text_encoder.text_projection.weight, parts["text_encoder"].text_projection.weight)
    want = _pixels(_pipe(_folder(parts, tmp_path / "ref", t5)))
    assert np.array_equal(_pixels(loaded), want) and want.std() > 5
