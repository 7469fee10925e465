"""Stable unCLIP's inputs (issue 28): variations from a picture, the noise level, the prior's steps and
guidance, the folders beside its UNet. Bad ones end in one line and exit 2 (a prior without a decoder,
a noise level out of range, variations on a model without an image encoder or from an unreadable
picture); fuzzed flags and damaged files end in images or one line, never a traceback."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import fails, generate, meta
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_fuzz import FUZZ, assert_clean, numbers_as_text, run_loaded
from test_fuzz_models import _bounded_memory, generate_from_damaged  # noqa: F401 (a fixture)

SMALL = ["--steps", "2", "--width", "32", "--height", "32"]


@pytest.fixture(scope="module")
def decoder_only(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("unclip") / "decoder", "unclip-decoder")


@pytest.fixture(scope="module")
def prior_alone(tiny_unclip, tmp_path_factory):
    """A KandinskyV22PriorPipeline-shaped folder: a prior with no decoder."""
    path = tmp_path_factory.mktemp("unclip") / "prior"
    for name in ("prior", "prior_scheduler"):
        shutil.copytree(tiny_unclip / name, path / name)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22PriorPipeline"}))
    return path


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("unclip") / "in.png"
    Image.new("RGB", (40, 24), (200, 30, 60)).save(path)
    return path


def test_variations_from_the_cli_record_and_replay(capsys, tiny_unclip, picture, tmp_path):
    (made,) = generate(capsys, "--model", tiny_unclip, "--variations", picture, "--noise-level", 20,
                       *SMALL, "--out", tmp_path / "a")  # fmt: skip
    info = meta(made)
    assert (info["variations"], info["noise_level"], info["image_embedding"]) == (str(picture), 20, "variations")
    (again,) = generate(capsys, "--from", made, "--out", tmp_path / "b")
    assert meta(again)["noise_level"] == 20 and Image.open(again).tobytes() == Image.open(made).tobytes()


@pytest.fixture
def loaded_once(monkeypatch):
    """Pipeline.from_pretrained loading each model once for the test (the refusals come after loading)."""
    from latentdiff import Pipeline

    real, cache = Pipeline.from_pretrained.__func__, {}

    def once(cls, model=None, **kwargs):
        if str(model) not in cache:
            cache[str(model)] = real(cls, model, **kwargs)
        return cache[str(model)]

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(once))


@pytest.mark.usefixtures("loaded_once")
def test_refusals_are_one_line(capsys, tiny_unclip, decoder_only, prior_alone, picture, tmp_path, tiny_sd1):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    cases = [
        ((prior_alone,), "a prior without a decoder"),
        ((tiny_unclip, "--noise-level", 1000), "noise_level must be from 0 to 999"),
        ((tiny_unclip, "--noise-level", -1), "noise_level must be from 0 to 999"),
        ((decoder_only, "--variations", picture), "has none"),
        ((tiny_unclip, "--variations", broken), "variations.image"),
        ((tiny_unclip, "--variations", tmp_path / "missing.png"), "no such picture file"),
        ((tiny_sd1, "--variations", picture), "need a Stable unCLIP model"),
        ((decoder_only, "--prior-steps", 3), "need a model with a prior"),
        ((tiny_unclip, "--variations", picture, "--prior-guidance", 2), "not for variations"),
        ((tiny_unclip, "--prior", picture), "not a Kandinsky 2.2 prior folder"),
        ((tiny_unclip, "--prior", tiny_unclip), "not a Kandinsky 2.2 prior"),
        ((tiny_unclip, "--prior-steps", 1), "prior_steps must be >= 2"),
    ]
    for (model, *flags), message in cases:
        assert message in fails(capsys, "x", "--model", model, *flags, *SMALL, "--out", tmp_path), (model, flags)


@pytest.fixture(scope="module")
def pipe_unclip(tiny_unclip):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(str(tiny_unclip), device="cpu", dtype="fp32")
    pipe.progress = False
    return pipe


FLAGS = ["--variations", "--noise-level", "--prior", "--prior-steps", "--prior-guidance", "--guidance"]


@pytest.mark.slow
@settings(FUZZ, max_examples=12)
@given(flags=st.lists(st.sampled_from(FLAGS), max_size=3), data=st.data())
def test_fuzz_unclip_flags(tiny_unclip, pipe_unclip, picture, flags, data):
    values = numbers_as_text | st.sampled_from([str(picture), "missing.png", ".", ""])
    argv = ["generate", "x", "--model", str(tiny_unclip), "--quiet", "--steps", "1", "--width", "16", "--height", "16"]
    for flag in flags:
        argv += [flag, data.draw(values)]
    with tempfile.TemporaryDirectory() as tmp:
        code, out, err = run_loaded(pipe_unclip, [*argv, "--out", tmp])
        assert_clean(code, out, err, Path(tmp))


FILES = [
    "model_index.json",
    "image_normalizer/config.json",
    "image_noising_scheduler/scheduler_config.json",
    "image_encoder/config.json",
    "feature_extractor/preprocessor_config.json",
    "prior/config.json",
    "prior_text_encoder/config.json",
    "prior_scheduler/scheduler_config.json",
    "prior/diffusion_pytorch_model.safetensors",
]


@pytest.mark.slow
@settings(FUZZ, max_examples=10)
@given(data=st.data(), file=st.sampled_from(FILES), how=st.sampled_from(["folder", "truncated", "deep", "type"]))
def test_fuzz_unclip_model_files(tiny_unclip, data, file, how):
    if how in ("deep", "type") and not file.endswith(".json"):
        how = "truncated"
    generate_from_damaged(tiny_unclip, data, file, how)
