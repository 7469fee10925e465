"""`latentdiff generate` on a tiny Flux.1 dev folder: the CLI path end to end, the PNG's record."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_cli_here
from PIL import Image

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiny_flux_dev(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("flux") / "dev", "flux-dev")


@pytest.mark.slow
def test_generate_writes_flux_images_with_their_record(tiny_flux_dev, tmp_path):
    from latentdiff import Pipeline
    from latentdiff.images.write import read_params

    args = ["--model", tiny_flux_dev, "--width", "48", "--height", "32", "--steps", "2", "--seed", "4"]
    r = run_cli("generate", "a red apple", *args, "--num-images", "2", "--negative", "blue sky",
                "--true-cfg", "2", "--out", tmp_path, "--quiet", "--device", "cpu")  # fmt: skip
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a-red-apple-s4-0000.png", "a-red-apple-s5-0000.png"]
    recorded = [read_params(p) for p in paths]
    assert [(p["seed"], p["true_cfg"], p["guidance"], p["steps"]) for p in recorded] == [
        (4, 2.0, 3.5, 2),
        (5, 2.0, 3.5, 2),
    ]
    assert recorded[0]["scheduler_class"] == "FlowMatchEulerDiscreteScheduler"
    assert recorded[0]["model"] == str(tiny_flux_dev) and recorded[0]["negative_prompt"] == "blue sky"
    # The same pixels as the Python API (tests/parity/test_flux.py holds that one to FluxPipeline).
    pipe = Pipeline.from_pretrained(tiny_flux_dev, device="cpu", dtype="fp32")
    pipe.progress = False
    want = pipe("a red apple", "blue sky", true_cfg=2.0, steps=2, width=48, height=32, num_images=2, seed=4)
    for path, image in zip(paths, want):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(image))


@pytest.mark.slow
def test_generate_refuses_a_size_flux_cannot_patch_and_a_true_cfg_below_one(tiny_flux_dev, tmp_path):
    base = [
        "generate",
        "a cat",
        "--model",
        tiny_flux_dev,
        "--steps",
        "1",
        "--out",
        tmp_path,
        "--device",
        "cpu",
        "--quiet",
    ]
    for extra, words in (
        (["--width", "42", "--height", "32"], "not a multiple of 4"),
        (["--true-cfg", "0.5"], "--true-cfg must be >= 1"),
    ):
        r = run_cli_here(*base, *extra)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_flux_refuses_the_sampler_tables_choices_and_reads_a_forge_line_with_its_own_scheduler(tiny_flux_dev, tmp_path):
    from PIL import PngImagePlugin

    from latentdiff.images.write import read_params

    base = ["generate", "a cat", "--model", tiny_flux_dev, "--steps", "1", "--width", "32", "--height", "32",
            "--device", "cpu", "--quiet"]  # fmt: skip
    for extra in (["--scheduler", "euler"], ["--scheduler", "DPM++ 2M Karras"], ["--schedule-type", "karras"]):
        r = run_cli_here(*base, "--out", tmp_path / "refused", *extra)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # Forge's Flux line ("Sampler: Euler, Schedule type: Simple"): the model's own flow-matching Euler.
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 1, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
                  "Distilled CFG Scale: 3.5, Seed: 3, Size: 32x32, Model: flux1-dev")  # fmt: skip
    forge = tmp_path / "forge.png"
    Image.new("RGB", (32, 32)).save(forge, pnginfo=info)
    r = run_cli_here(*base, "--from", forge, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    recorded = read_params(r.stdout.split()[0])
    assert recorded["scheduler"] is None and recorded["scheduler_class"] == "FlowMatchEulerDiscreteScheduler"
    assert (recorded["guidance"], recorded["seed"]) == (3.5, 3)
