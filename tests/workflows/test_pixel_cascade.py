"""The cascade as generate runs it: pixel SR stages (IF stage II layout) after the base image, given
with --upscaler DIR[,settings] (repeatable, in order) or declared in the model folder's latentdiff.json
"cascade"; each stage's settings recorded; sizes that do not chain and bad settings refused in one line."""

import json
import shutil

import numpy as np
import pytest
from helpers import png_texts
from PIL import Image


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_pixel_sr

    root = tmp_path_factory.mktemp("stages")
    return (
        make_tiny_pixel_sr(root / "s32", 32, seed=1, defaults={"steps": 2, "guidance": 1.0, "noise_level": 20}),
        make_tiny_pixel_sr(root / "s64", 64, seed=2, defaults={"steps": 2}),
    )


@pytest.fixture(scope="module")
def model(tiny_sd1, stages, tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade") / "model"
    shutil.copytree(tiny_sd1, root)
    shutil.copytree(stages[0], root / "stage2")
    cascade = [{"path": "stage2", "steps": 3, "noise_level": 40}]
    (root / "latentdiff.json").write_text(json.dumps({"steps": 2, "cascade": cascade}))
    return root


def test_two_stages_in_order_each_recorded(generate, tiny_sd1, stages, tmp_path):
    s32, s64 = stages
    code, out, err = generate(
        tiny_sd1, tmp_path, "--width", "16", "--height", "16", "--upscaler", f"{s32},noise_level=50,guidance=2",
        "--upscaler", f"{s64},steps=1",
    )  # fmt: skip
    assert code == 0, err
    path = out.strip()
    assert Image.open(path).size == (64, 64)
    record, _ = png_texts(path)
    first, second = record["cascade"]
    assert first == {"path": str(s32), "steps": 2, "guidance": 2.0, "noise_level": 50, "size": [32, 32]}
    assert second == {"path": str(s64), "steps": 1, "guidance": 4.0, "noise_level": 250, "size": [64, 64]}


def test_the_models_cascade_runs_unless_turned_off(model, generate, tmp_path):
    code, out, err = generate(model, tmp_path / "a", "--width", "16", "--height", "16")
    assert code == 0, err
    record, _ = png_texts(out.strip())
    assert Image.open(out.strip()).size == (32, 32)
    stage = record["cascade"][0]
    assert stage["path"] == str((model / "stage2").resolve()) and (stage["steps"], stage["noise_level"]) == (3, 40)
    code, out, err = generate(model, tmp_path / "b", "--width", "16", "--height", "16", "--no-upscale")
    assert code == 0 and Image.open(out.strip()).size == (16, 16)


def test_a_pixel_stage_named_as_the_models_upscaler_runs_by_default(tiny_sd1, stages, generate, tmp_path):
    """The shipped model's form: latentdiff.json's one-stage "upscaler" key naming a pixel stage."""
    model = tmp_path / "model"
    shutil.copytree(tiny_sd1, model)
    shutil.copytree(stages[0], model / "upscaler")
    (model / "latentdiff.json").write_text(json.dumps({"steps": 2, "upscaler": "upscaler"}))
    code, out, err = generate(model, tmp_path / "a", "--width", "16", "--height", "16")
    assert code == 0 and Image.open(out.strip()).size == (32, 32), err
    assert png_texts(out.strip())[0]["cascade"][0]["noise_level"] == 20  # the stage's own latentdiff.json
    code, out, err = generate(model, tmp_path / "b", "--width", "16", "--height", "16", "--no-upscale")
    assert code == 0 and Image.open(out.strip()).size == (16, 16), err


@pytest.mark.parametrize(
    "spec,match",
    [
        ("{s64}", "takes 32x32 images; the stage before gives 16x16"),
        ("{s32},noise_level=1000", "noise level must be a whole number from 0 to 999"),
        ("{s32},noise_level=-1", "noise_level must be a whole number >= 0"),
        ("{s32},steps=0", "steps must be a whole number from 1 to 1000"),
        ("{s32},step=2", "unknown setting"),
        ("{s32},steps", "NAME=VALUE"),
        ("{s32}/missing", "is not a model folder"),
    ],
)
def test_bad_stages_are_one_line_exit_2(generate, tiny_sd1, stages, tmp_path, spec, match):
    code, out, err = generate(
        tiny_sd1, tmp_path, "--width", "16", "--height", "16", "--upscaler", spec.format(s32=stages[0], s64=stages[1])
    )
    assert code == 2 and out == "" and match in err and len(err.strip().splitlines()) == 1, err


def test_pipe_upscale_takes_a_pixel_stage(tiny_sd1, stages):
    """eval-emoji --cascade and the Python API upscale through a pixel stage as through a latent upscaler."""
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    pipe.progress = False
    base = pipe("a red apple", seed=3, steps=2, width=16, height=16)[0]
    big = pipe("a red apple", seed=3, steps=2, width=16, height=16, upscaler=str(stages[0]))[0]
    up = pipe.upscale(base, prompt="a red apple", seed=3, upscaler=str(stages[0]))
    assert np.array_equal(np.asarray(up), np.asarray(big))
    info = up.info["latentdiff"]
    assert (info["steps"], info["guidance"], info["noise_level"], info["upscaler"]) == (2, 1.0, 20, str(stages[0]))


def test_sizes_are_checked_before_the_base_image_is_made(generate, tiny_sd1, stages, tmp_path, monkeypatch):
    import latentdiff.workflows.text_to_image as text_to_image

    def never(*a, **k):
        raise AssertionError("the base image was made")

    monkeypatch.setattr(text_to_image, "generate_batch", never)
    code, out, err = generate(tiny_sd1, tmp_path, "--width", "32", "--height", "32", "--upscaler", str(stages[0]))
    assert code == 2 and "takes 16x16 images; the stage before gives 32x32" in err
