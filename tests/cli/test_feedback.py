"""What generate says while it works: checks before the weights load, the loading line, and a
note where a size is far beyond what the model was trained for (issue 22)."""

import pytest
from PIL import Image

from latentdiff import UsageError
from latentdiff.cli.main import main
from latentdiff.formats.preflight import megabytes, model_facts, size_note


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before the request was checked")

    monkeypatch.setattr("latentdiff.formats.load.load", refuse)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--height", "102"], "--height 102 is not a multiple of 4; try 100 or 104"),
        (["--width", "66"], "--width 66 is not a multiple of 4"),
        (["--steps", "5000"], "--steps must be <= 1000 (the model's number of training timesteps)"),
        (["--seed", "-1"], "--seed must be >= 0, got -1; for a random seed use --random-seed"),
        (
            ["--clip-skip", "3"],
            "--clip-skip must be a whole number from 1 (last layer) to 2 for this model's text encoder",
        ),
    ],
)
def test_bad_flags_fail_before_the_weights_load(tiny_sd1, tmp_path, capsys, no_loading, flags, message):
    assert main(["generate", "x", "--model", str(tiny_sd1), "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "loading" not in err and len(err.strip().splitlines()) == 1


def test_an_upscaler_given_to_generate_fails_before_its_weights_load(tmp_path, capsys, no_loading):
    from latentdiff.models.testing import make_tiny_upscaler

    upscaler = make_tiny_upscaler(tmp_path / "up")
    assert main(["generate", "x", "--model", str(upscaler), "--out", str(tmp_path / "o")]) == 2
    assert "is a diffusion upscaler, not a text-to-image model" in capsys.readouterr().err


def test_a_size_that_cannot_fit_fails_before_the_weights_load(tiny_sd1, tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 2**20)
    assert (
        main(["generate", "x", "--model", str(tiny_sd1), "--out", str(tmp_path), "--width", "1024", "--height", "1024"])
        == 2
    )
    assert "a 1024x1024 image needs about" in capsys.readouterr().err
    # the hires target counts: 64 px fits in 1 MiB, 8x that does not
    assert main(["generate", "x", "--model", str(tiny_sd1), "--out", str(tmp_path), "--hires", "8"]) == 2
    assert "a 512x512 image needs about" in capsys.readouterr().err


def test_the_loading_line_names_the_model_and_its_size(tiny_sd1, tmp_path, capsys):
    args = ["generate", "x", "--model", str(tiny_sd1), "--out", str(tmp_path), "--steps", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    weights = sum(
        f.stat().st_size
        for part in ("unet", "vae", "text_encoder")
        for f in (tiny_sd1 / part).iterdir()
        if f.suffix == ".safetensors"
    )
    assert f"latentdiff: loading {tiny_sd1} ({megabytes(weights)})..." in err
    assert [line for line in out.splitlines()] == [str(next(tmp_path.glob("*.png")))]  # stdout: paths only
    assert main(args + ["--quiet"]) == 0
    assert "loading" not in capsys.readouterr().err


def test_the_loading_line_of_a_lora_folder_counts_its_base(tiny_sd1, tmp_path):
    """A LoRA run folder loads its base model: the line gives the base's size (it was a TypeError
    traceback: the base came back as a str)."""
    import json

    from latentdiff.formats.preflight import loading_line, weights_bytes

    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (tmp_path / "latentdiff.json").write_text(json.dumps({"base_model": str(tiny_sd1)}))
    assert weights_bytes(tmp_path) == weights_bytes(tiny_sd1) > 0
    assert loading_line(tmp_path).endswith(f"({megabytes(weights_bytes(tiny_sd1))})...")


def test_the_shipped_model_facts():
    facts = model_facts(None)
    assert (facts.factor, facts.native, facts.train_timesteps, facts.text_layers) == (4, 64, 1000, 4)


def test_a_size_far_beyond_the_trained_one_gets_one_note(pipe_sd1, capsys, monkeypatch):
    monkeypatch.setattr(pipe_sd1, "notes", set())
    assert pipe_sd1.native_size == 64
    pipe_sd1("x", steps=1, width=88, height=88)  # 1.9x the area: no note
    assert "note" not in capsys.readouterr().err
    for _ in range(2):
        pipe_sd1("x", steps=1, width=128, height=128)
    notes = [line for line in capsys.readouterr().err.splitlines() if "note" in line]
    assert notes == [
        "latentdiff: note: 128x128 is 4.0x the area of the 64x64 images this model was trained on: "
        "expect repeated, tiled shapes rather than one larger picture; generate at 64x64 and enlarge "
        "the result (--upscaler MODEL, or an image editor)"
    ]
    pipe_sd1("x", steps=1, hires=2, hires_steps=1)
    assert "hires fix to 128x128 is 4.0x the area" in capsys.readouterr().err


def test_outpainting_past_the_trained_size_gets_a_note(pipe_sd1, capsys, monkeypatch):
    monkeypatch.setattr(pipe_sd1, "notes", set())
    pipe_sd1("x", steps=1, image=Image.new("RGB", (64, 64), "red"), outpaint="64,64,0,0")
    assert "the outpainted canvas 192x64 is 3.0x the area" in capsys.readouterr().err


def test_size_note_rule():
    assert size_note(512, 8, 512, 768) is None  # SD 1.5 portrait: a usual size
    assert "768x768 is 2.2x" in size_note(512, 8, 768, 768)
    assert "starting picture's 256x256" in size_note(64, 4, 256, 256, start="image")


def test_seed_minus_one_in_python_names_none(pipe_sd1):
    with pytest.raises(UsageError, match="for a random seed use seed=None"):
        pipe_sd1("x", seed=-1)
