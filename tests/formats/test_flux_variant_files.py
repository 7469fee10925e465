"""Flux.1 Fill and Kontext transformer files as ComfyUI users keep them (models/diffusion_models/ beside the
encoders and ae.safetensors that dev uses): Fill told by its input features (more than it outputs: the masked
image's latents and the mask beside the latents), Kontext (dev's shapes) by its file's name or by the pipeline
`latentdiff convert` writes into its metadata. Each loads to the weights of the diffusers folder made of the
same parts and gives its pixels exactly (that folder's pixels are held to FluxFillPipeline's and
FluxKontextPipeline's in tests/parity/test_flux_fill.py and test_flux_kontext.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_tree import scaled_fp8, write_comfy_tree

sys.path.insert(0, str(Path(__file__).parents[1] / "parity"))
from flow_parity import box_mask, picture  # noqa: E402

W = H = 32


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """The tiny ComfyUI tree, its parts' T5 holding the scaled fp8 values the tree's T5 file holds."""
    from latentdiff.formats.transformer_parts import upcast_fp8

    root = tmp_path_factory.mktemp("comfyui")
    parts, dev_file = write_comfy_tree(root)
    t5 = parts["text_encoder_2"]
    t5.load_state_dict({k: v.float() for k, v in upcast_fp8(scaled_fp8(t5.state_dict())).items()}, strict=False)
    return root, parts, dev_file


def _fill_transformer(parts: dict):
    """Fill's transformer on dev's parts: in features for the latents, the masked image's latents and the
    mask's f x f pixels of each latent pixel (f: the VAE's factor), all in 2x2 patches."""
    from diffusers import FluxTransformer2DModel

    factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    torch.manual_seed(1)
    config = {k: v for k, v in parts["unet"].config.items() if not k.startswith("_")}  # its own, not defaults
    config.update(in_channels=64 + 64 + 4 * factor * factor, out_channels=64)
    return FluxTransformer2DModel.from_config(config).eval()


def _write(path, transformer, **meta):
    from safetensors.torch import save_file

    from latentdiff.formats.transformer_keys import to_original

    tensors = {k: v.contiguous() for k, v in to_original(transformer.state_dict(), "flux").items()}
    save_file(tensors, str(path), metadata=meta or None)
    return path


def _folder(parts: dict, out, pipeline: str, transformer=None):
    """The diffusers folder of `parts` (with `transformer`) as `pipeline` saves itself."""
    from latentdiff.families.flux_tiny import SCHEDULERS
    from latentdiff.models.components import Components, save_components

    scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULERS["flux-dev"]}
    c = Components(**{**parts, "unet": transformer or parts["unet"]}, scheduler_config=scheduler, defaults={})
    c.index = {"_class_name": pipeline}
    save_components(c, out, scheduler["_class_name"])
    return out


def _pipe(model, **kw):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", **kw)
    pipe.progress = False
    return pipe


def _pixels(pipe, **kw) -> np.ndarray:
    image = picture((W, H), 2)
    out = pipe("a red apple", steps=2, seed=4, width=W, height=H, guidance=3.0, image=image, **kw)
    return np.asarray(out[0], dtype=np.int16)


def _same_weights(a, b) -> bool:
    want = b.state_dict()
    return all(torch.equal(v, want[k]) for k, v in a.state_dict().items())


def test_a_fill_file_with_comfyui_models_folder_inpaints_as_the_fill_folder(comfy, tmp_path):
    root, parts, _ = comfy
    fill = _fill_transformer(parts)
    f = _write(root / "models" / "diffusion_models" / "flux1-fill-dev.safetensors", fill)
    loaded = _pipe(f, components=root / "models")
    folder = _pipe(_folder(parts, tmp_path / "fill", "FluxFillPipeline", fill))
    assert loaded.family.variant(loaded.components) == "flux-fill" and _same_weights(loaded.components.unet, fill)
    assert loaded.defaults() == folder.defaults() == {"steps": 50, "guidance": 30.0}
    want = _pixels(folder, mask=box_mask((W, H)), mask_blur=0, strength=1.0)
    assert np.array_equal(_pixels(loaded, mask=box_mask((W, H)), mask_blur=0, strength=1.0), want) and want.std() > 5


def test_kontext_is_told_by_its_file_name_or_metadata(comfy, tmp_path):
    from latentdiff.formats.convert import convert

    root, parts, dev_file = comfy
    models = root / "models"
    kontext = _write(models / "diffusion_models" / "flux1-dev-kontext_fp8_scaled.safetensors", parts["unet"])
    loaded = _pipe(kontext, components=models)
    folder = _pipe(_folder(parts, tmp_path / "kontext", "FluxKontextPipeline"))
    assert loaded.family.variant(loaded.components) == "flux-kontext" and _same_weights(
        loaded.components.unet, parts["unet"]
    )
    want = _pixels(folder)
    assert np.array_equal(_pixels(loaded), want) and want.std() > 5
    dev = _pipe(dev_file, components=models)  # the same tensors under dev's name: dev, which starts from the picture
    assert dev.family.variant(dev.components) == "flux-dev"
    assert np.abs(_pixels(dev, strength=1.0) - want).max() > 0
    # `convert` writes the folder's pipeline into the file: Kontext whatever its name, and back to a Kontext folder
    written = convert(tmp_path / "kontext", tmp_path / "model.safetensors")
    again = convert(written, tmp_path / "again", components=models)
    assert json.loads((again / "model_index.json").read_text())["_class_name"] == "FluxKontextPipeline"
    assert np.array_equal(_pixels(_pipe(written, components=models)), want)
