import os
import subprocess
import sys
from pathlib import Path

import pytest

# No test may reach the network: huggingface_hub must answer from the (empty) cache only.
os.environ["HF_HUB_OFFLINE"] = "1"
# OpenMP's threads sleep while they wait, as the CLIs set it (cli/generate.py), here before torch loads
# OpenMP, in this process and so in xdist's workers and the CLI processes tests start. The references
# (diffusers' pipelines, k-diffusion, training steps) run on torch's own thread count: with OpenMP's
# default spinning waits, two workers on two busy cores made a diffusers reference call 10-40x slower
# (measured: 0.2 CPU s and 0.5-3 s wall passive or on 1 thread, 4-5 CPU s and 28-41 s wall spinning).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("LATENTDIFF_CACHE", str(Path(__file__).parent / ".cache-unused"))


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "sd1", "sd1")


@pytest.fixture(scope="session")
def tiny_unclip(tmp_path_factory):
    """A tiny Stable unCLIP model with a prior and an image encoder (tests/parity/test_unclip.py, tests/inputs)."""
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "unclip", "unclip", seed=3, defaults={"steps": 2})


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "sd2", "sd2", defaults={"steps": 3, "guidance": 4.0})


@pytest.fixture(scope="session")
def tiny_klein(tmp_path_factory):
    """A tiny FLUX.2 klein base folder (Flux2KleinPipeline's layout), shared by its family, parity and CLI tests."""
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "klein", "flux2-klein", seed=1)


@pytest.fixture
def squares(tmp_path):
    """A two-image training dataset (a red and a blue square, captioned) in a fresh folder."""
    from PIL import Image

    root = tmp_path / "ds"
    root.mkdir()
    for i, c in enumerate(["red", "blue"]):
        Image.new("RGB", (64, 64), c).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {c} square")
    return root


@pytest.fixture(scope="session")
def pipe_sd1(tiny_sd1):
    from latentdiff import Pipeline

    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    p.progress = False
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("latentdiff.models.fingerprint._CACHE", tmp_path / "cache" / "hashes.json", raising=False)


def run_cli(*args, cwd=None, env=None):
    """Run the real console entry point in a fresh process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "latentdiff.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=300,
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where torch sees a CUDA device (`pytest -m gpu` on a GPU machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_sdxl

    return make_tiny_sdxl(tmp_path_factory.mktemp("models") / "sdxl")


@pytest.fixture(scope="session")
def tiny_refiner(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_sdxl

    return make_tiny_sdxl(tmp_path_factory.mktemp("models") / "sdxl-refiner", refiner=True)


SERVER_TOKEN = "test-token-0123456789"
CORS_ORIGIN = "http://allowed.example:8000"


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """One real `latentdiff serve` for the server test modules: two tiny models and a broken one
    in --models-dir (and a tiny ControlNet in its controlnet/ folder, tiny IP-Adapters in the h94
    layout in its ipadapter/ folder), a token, a small queue, a 1 MB body limit and a memory budget that holds
    one tiny model at a time, and --cors for one origin."""
    pytest.importorskip("fastapi", reason="the server extra (latentdiff[serve]) is not installed")
    from helpers import kohya_file, save_tiny_controlnet

    from latentdiff.models.testing import make_tiny_model
    from latentdiff.server.process import ServerProcess

    root = tmp_path_factory.mktemp("serve")
    models = root / "models"
    make_tiny_model(models / "tiny-a", "sd1", defaults={"steps": 3, "guidance": 3.0})
    save_tiny_controlnet(models / "tiny-a", models / "controlnet" / "cn-tiny")  # found as --models-dir's controlnet/
    _ip_adapters(models / "tiny-a", models / "ipadapter")  # found as --models-dir's ipadapter/
    make_tiny_model(models / "tiny-b", "sd2", defaults={"steps": 3, "guidance": 4.0})
    (models / "lora").mkdir()  # A1111's LoRA folder and styles, found in --models-dir (server/folders.py)
    kohya_file(models / "lora" / "detail.safetensors")
    (models / "styles.csv").write_text('name,prompt,negative_prompt\nfilm,"film still of {prompt}",blurry\n')
    (models / "broken").mkdir()
    (models / "broken" / "model_index.json").write_text("{}")
    server = ServerProcess(
        root,
        "--model",
        models / "tiny-a",
        "--models-dir",
        models,
        "--out",
        root / "out",
        "--queue-size",
        2,
        "--max-body-mb",
        1,
        "--memory-budget",
        0.0001,
        "--device",
        "cpu",
        "--cors",
        CORS_ORIGIN,
        "--dtype",
        "fp32",
        token=SERVER_TOKEN,
        env={"LATENTDIFF_CACHE": str(root / "cache")},
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _ip_adapters(model, folder):
    """The h94 repository's models/ folder (image_encoder/, base, Plus and FaceID adapters as
    .safetensors and .bin) for the UNet of `model`, inside `folder`."""
    from ip_adapter_files import h94_layout

    from latentdiff import Pipeline

    h94_layout(folder, Pipeline.from_pretrained(model, device="cpu", dtype="fp32").components.unet)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four captioned circles (72x64) in a folder of their own, one per test module."""
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("ds")
    for i, c in enumerate(["red", "green", "blue", "yellow"]):
        im = Image.new("RGB", (72, 64), "white")
        ImageDraw.Draw(im).ellipse((8, 8, 56, 56), fill=c)
        im.save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {c} circle")
    return root


# ---- `latentdiff ARGV` in-process (the CLI tests of controls and image prompts) ----


@pytest.fixture
def run_main(capsys):
    """`latentdiff ARGV` in-process: (exit code, stdout, stderr)."""

    def run(argv):
        try:
            from latentdiff.cli.main import main

            code = main([*map(str, argv), *(["--device", "cpu"] if argv[0] == "generate" else [])])
        except SystemExit as e:  # argparse's own refusals
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def generate(run_main):
    def run(tiny, out, *flags):
        base = ["generate", "a red apple", "--model", tiny, "--steps", "2", "--seed", "3", "--quiet"]
        return run_main([*base, "--out", out, *flags])

    return run
