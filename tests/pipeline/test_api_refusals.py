"""Issue 24, the Python API: wrong element types are a UsageError (never a TypeError), bools are no
numbers, outpaint is whole numbers bounded by the side limit and memory, and save_pretrained never
writes over the folder the model was loaded from."""

import os
import re
import shutil
from pathlib import Path
from unittest import mock

import pytest
from PIL import Image

import latentdiff.config.outpaint as outpaint
import latentdiff.config.params as params
from latentdiff import Pipeline, UsageError
from latentdiff.formats.lora import LoraSpec

WRONG_ITEMS = [5, [5], [None], [b"x"], [["a"]], [1.5], "x", {"a": 1}, [LoraSpec(5)], [LoraSpec("a", float("nan"))]]


def one_line(fn, match=None) -> str:
    with pytest.raises(UsageError, match=match) as e:
        fn()
    assert "\n" not in str(e.value) and str(e.value)
    return str(e.value)


@pytest.mark.parametrize("value", WRONG_ITEMS, ids=repr)
@pytest.mark.parametrize("name", ["loras", "embeddings"])
def test_wrong_lora_and_embedding_items_are_usage_errors(tiny_sd1, name, value):
    line = one_line(lambda: Pipeline.from_pretrained(tiny_sd1, device="cpu", **{name: value}))
    assert line.startswith(name) or "LoRA scale" in line


@pytest.mark.parametrize("value", [5, b"x", ["a"], 1.5, True])
def test_a_vae_that_is_no_path_is_a_usage_error(tiny_sd1, value):
    one_line(lambda: Pipeline.from_pretrained(tiny_sd1, device="cpu", vae=value), "vae must be a path")


@pytest.mark.parametrize("scale", ["nan", "inf", "1e9"])
def test_a_lora_scale_must_be_finite_and_bounded(tiny_sd1, tmp_path, scale):
    f = tmp_path / "l.safetensors"
    f.write_bytes(b"x")
    one_line(lambda: Pipeline.from_pretrained(tiny_sd1, device="cpu", loras=[f"{f}:{scale}"]), "LoRA scale")


GOOD = dict(steps=1, width=16, height=16)
PICTURE = Image.new("RGB", (16, 16), "red")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(callback=5), "callback must be a function"),
        (dict(callback="x"), "callback must be a function"),
        (dict(hires=1.5, hires_strength="0.5"), "hires strength"),
        (dict(hires=1.5, hires_strength=True), "hires strength"),
        (dict(hires=1.5, hires_strength=[1]), "hires strength"),
        (dict(hires=1.5, hires_strength=float("nan")), "hires strength"),
        (dict(image=PICTURE, strength=True), "strength"),
        (dict(image=PICTURE, strength=float("nan")), "strength"),
        (dict(image=PICTURE, outpaint=[2.5, 0, 0, 8]), "outpaint must be a whole number"),
        (dict(image=PICTURE, outpaint=[True, 0, 0, 8]), "outpaint must be a whole number"),
        (dict(image=PICTURE, outpaint="1.5,0,0,8"), "outpaint must be a whole number"),
        (dict(image=PICTURE, outpaint=[10**6, 0, 0, 8]), "outpaint must be <= 16384"),
        (dict(image=PICTURE, outpaint=[16384, 0, 0, 8]), "grows the 16x16 picture to 16400x24; at most 16384"),
        (dict(image=PICTURE, outpaint=[-1, 0, 0, 8]), "outpaint must be >= 0"),
        (dict(image=PICTURE, outpaint=[0, 0, 0, 0]), "outpaint grows nothing"),
        (dict(image=PICTURE, outpaint=[1, 2, 3]), "outpaint must be four"),
        (dict(image=PICTURE, outpaint="1,2"), "outpaint must be four"),
        (dict(image=PICTURE, outpaint=8), "outpaint must be four"),
        (dict(upscale=1), "upscale"),
        (dict(image=PICTURE, mask=PICTURE, mask_blur=10**9), "mask_blur"),
        (dict(image=PICTURE, mask=PICTURE, padding=10**12), "padding"),
    ],
    ids=lambda v: re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v)),  # the same ids in every process (pytest-xdist)
)
def test_wrong_call_arguments_are_one_usage_error(pipe_sd1, kwargs, match):
    one_line(lambda: pipe_sd1("x", **{**GOOD, **kwargs}), match)


def test_outpaint_is_bounded_by_memory(pipe_sd1):
    with mock.patch("latentdiff.runtime.memory.available_bytes", lambda device: 2**20):
        line = one_line(lambda: pipe_sd1("x", image=PICTURE, outpaint=[512, 512, 512, 512], steps=1))
    assert "outpainting to 1040x1040 needs about" in line and "outpaint less at a time" in line


def test_the_shared_outpaint_check(monkeypatch):
    """One function for the CLI, the Python API and the server's `outpaint` field."""
    assert outpaint.outpaint(params.api_label, [1, 2, 3, 4]) == (1, 2, 3, 4)
    assert outpaint.outpaint(params.api_label, "8,0,0,8", (64, 64)) == (8, 0, 0, 8)
    assert outpaint.outpaint(params.api_label, (8.0, 0, 0, 0)) == (8, 0, 0, 0)  # integral floats are whole numbers
    with pytest.raises(UsageError, match="outpaint must be a whole number, got True"):
        outpaint.outpaint(params.api_label, [True, 0, 0, 0])
    with pytest.raises(UsageError, match="at most 16384 px a side"):
        outpaint.outpaint(params.api_label, [16000, 16000, 0, 0], (64, 64))


# ---- save_pretrained ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out, dtype", [(5, None), (None, None), (b"/tmp/x", None), ("", None), (" ", None), ("o", ["fp16"]), ("o", 5)]
)
def test_save_pretrained_argument_types(pipe_sd1, tmp_path, monkeypatch, out, dtype):
    monkeypatch.chdir(tmp_path)
    one_line(lambda: pipe_sd1.save_pretrained(out, dtype=dtype))
    assert list(tmp_path.iterdir()) == []


def _snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def test_save_pretrained_refuses_the_folder_it_was_loaded_from(tiny_sd1, tmp_path):
    model = Path(shutil.copytree(tiny_sd1, tmp_path / "m"))
    os.symlink(model, tmp_path / "link")
    pipe = Pipeline.from_pretrained(model, device="cpu")
    before = _snapshot(model)
    for out in (model, model / "unet", model / "new" / "deeper", tmp_path / "link", tmp_path / "link" / "vae"):
        one_line(lambda out=out: pipe.save_pretrained(out), "which this model was loaded from")
    one_line(lambda: pipe.save_pretrained(model / "model_index.json"), "is a file, not a folder")
    assert _snapshot(model) == before
    loaded_via_link = Pipeline.from_pretrained(tmp_path / "link", device="cpu")
    one_line(lambda: loaded_via_link.save_pretrained(model), "which this model was loaded from")
    assert pipe.save_pretrained(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # a folder beside it is fine
    assert (tmp_path / "elsewhere" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in (tmp_path / "elsewhere").iterdir() if p.name.startswith(".")]
