"""Chroma, FLUX.2, Qwen-Image and Z-Image transformer files as users have them (formats/
transformer_file.py): the original layouts against diffusers' converters, files without a config
told from their shapes, fp8 and GGUF (the architecture names ComfyUI-GGUF writes), each completed
by --components and giving the folder's pixels."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from latentdiff.formats.transformer_keys import to_diffusers, to_original

VARIANTS = {"chroma": "chroma", "flux2": "flux2-klein", "qwen-image": "qwen-image", "z-image": "z-image"}
# The tiny models' proportions changed to the released ones' (the rotary split of the head, Z-Image's
# rotary lengths), which a file without a config is read with.
RELEASED = {
    "chroma": dict(attention_head_dim=32, num_attention_heads=1, axes_dims_rope=(4, 14, 14)),
    "flux2": {},
    "qwen-image": dict(attention_head_dim=32, num_attention_heads=1, axes_dims_rope=(4, 14, 14)),
    "z-image": dict(axes_dims=[4, 6, 6], axes_lens=[1536, 512, 512]),
}
GGUF_ARCH = {"chroma": "flux", "flux2": "flux", "qwen-image": "qwen_image", "z-image": "lumina2"}  # ComfyUI-GGUF's


def _released_like(family: str, unet):
    model = type(unet).from_config({**unet.config, **RELEASED[family]})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    model.load_state_dict({k: v for k, v in unet.state_dict().items() if shapes[k] == v.shape}, strict=False)
    return model.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from latentdiff.models.assemble import load_components
    from latentdiff.models.testing import make_tiny

    root, out = tmp_path_factory.mktemp("dits"), {}
    for family, variant in VARIANTS.items():
        folder = make_tiny(root / family, variant, seed=3)
        unet = _released_like(family, load_components(folder).unet)
        unet.save_pretrained(folder / "transformer")
        out[family] = folder, unet
    return out


def _pipe(model, **kw):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", **kw)
    pipe.progress = False
    return pipe


def _pixels(pipe) -> np.ndarray:
    return np.asarray(pipe("a red apple", steps=2, seed=4, width=32, height=32)[0], dtype=np.int16)


def _original(pipe, family: str) -> dict:
    """The pipeline's transformer in its family's original layout."""
    return to_original(pipe.components.unet.state_dict(), family)


def test_tables_match_diffusers_converters(folders):
    """FLUX.2's and Z-Image's converters on the tiny models; Chroma's fixes the width at 3072: compared
    there on the meta device; Qwen-Image's is the identity."""
    from diffusers import ChromaTransformer2DModel
    from diffusers.loaders import single_file_utils as s

    converters = {"flux2": s.convert_flux2_transformer_checkpoint_to_diffusers, "qwen-image": dict}
    converters["z-image"] = s.convert_z_image_transformer_checkpoint_to_diffusers
    for family, convert in converters.items():
        sd = folders[family][1].state_dict()
        original = to_original(sd, family)
        theirs = convert(
            {"model.diffusion_model." + k: v for k, v in original.items()} if family == "z-image" else original
        )
        assert theirs.keys() == sd.keys() and all(torch.equal(theirs[k], sd[k]) for k in sd), family
        assert all(torch.equal(v, sd[k]) for k, v in to_diffusers(original, family, "x").items())
    with torch.device("meta"):
        sd = ChromaTransformer2DModel(num_layers=1, num_single_layers=2, approximator_layers=2).state_dict()
    original = to_original(sd, "chroma")
    assert "distilled_guidance_layer.norms.1.scale" in original and "single_blocks.1.linear1.bias" in original
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    theirs = s.convert_chroma_transformer_checkpoint_to_diffusers(dict(original))
    assert {k: tuple(v.shape) for k, v in theirs.items()} == shapes
    assert {k: tuple(v.shape) for k, v in to_diffusers(original, "chroma", "x").items()} == shapes


@pytest.mark.parametrize("family", list(VARIANTS))
def test_original_file_loads_as_the_folder(folders, tmp_path, family):
    """A file as ComfyUI keeps it (model.diffusion_model. before each name, no config): the config
    told from its shapes, the folder's weights and pixels; alone it is one line naming what it lacks."""
    from safetensors.torch import save_file

    from latentdiff.errors import UsageError
    from latentdiff.formats.transformer_configs import NEEDS

    folder = _pipe(folders[family][0])
    f = tmp_path / "t.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in _original(folder, family).items()}, str(f))
    with pytest.raises(UsageError, match=re.escape(NEEDS[family])):
        _pipe(f)
    loaded = _pipe(f, components=folders[family][0])
    want = folder.components.unet.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.components.unet.state_dict().items())
    assert np.array_equal(_pixels(loaded), _pixels(folder))


def test_fp8_scaled_z_image(folders, tmp_path):
    """ComfyUI's scaled fp8 (a scale_weight beside each matrix): the weights are the fp8 values times
    their scales, rounded to bf16."""
    from safetensors.torch import save_file

    folder = _pipe(folders["z-image"][0])
    stored, want = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in _original(folder, "z-image").items():
        matrix = v.ndim == 2 and k.endswith(".weight")  # scaled; vectors and pad tokens plain fp8
        scale = torch.tensor(0.25 if matrix else 1.0)
        stored[k] = (v / scale).to(torch.float8_e4m3fn)
        if matrix:
            stored[k.removesuffix("weight") + "scale_weight"] = scale
        want[k] = (stored[k].float() * scale).to(torch.bfloat16).float()
    save_file(stored, str(tmp_path / "z_image_fp8_scaled.safetensors"))
    loaded = _pipe(tmp_path / "z_image_fp8_scaled.safetensors", components=folders["z-image"][0])
    expect = to_diffusers(want, "z-image", "x")
    assert all(torch.equal(v, expect[k]) for k, v in loaded.components.unet.state_dict().items())


def test_gguf_families_told_from_their_tensors(folders, tmp_path):
    """ComfyUI-GGUF names Chroma's and FLUX.2's files "flux", Z-Image's "lumina2": the tensors tell."""
    from latentdiff.formats.gguf_file import write_gguf
    from latentdiff.formats.transformer_file import transformer_family

    for family, (_, unet) in folders.items():
        f = write_gguf(tmp_path / f"{family}.gguf", GGUF_ARCH[family], to_original(unet.state_dict(), family))
        assert transformer_family(f) == family


@pytest.mark.parametrize("family", ["chroma", "z-image"])
def test_gguf_q8_0(folders, tmp_path, family):
    """A Q8_0 GGUF: the matrices kept quantized, the pixels within 1/255 of those of its dequantized weights."""
    from latentdiff.formats.gguf_file import read_gguf, write_gguf

    folder = _pipe(folders[family][0])
    f = write_gguf(tmp_path / "t.gguf", GGUF_ARCH[family], _original(folder, family))
    loaded = _pipe(f, components=folders[family][0])
    assert any(type(m).__name__ == "GGUFLinear" for m in loaded.components.unet.modules())
    folder.components.unet.load_state_dict(to_diffusers(read_gguf(f)[1], family, "x"))
    got, want = _pixels(loaded), _pixels(folder)
    assert np.abs(got - want).max() <= 1 and want.std() > 5


def test_comfyui_qwen3_file_replaces_z_images_encoder(folders, tmp_path):
    """ComfyUI's qwen_3_4b.safetensors (a causal LM's names: model.*) as --text-encoder of a Z-Image folder."""
    from safetensors.torch import save_file

    from latentdiff.families.registry import FAMILIES

    other = FAMILIES["z-image"].tiny(seed=9)["text_encoder"].state_dict()
    save_file({"model." + k: v for k, v in other.items()}, str(tmp_path / "qwen_3_4b.safetensors"))
    loaded = _pipe(folders["z-image"][0], text_encoders=[tmp_path / "qwen_3_4b.safetensors"]).components
    got = loaded.text_encoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in other.items())
