"""Fuzzing every way input reaches latentdiff (hypothesis, derandomized so CI is repeatable): CLI
flags, the parameters a PNG records (--from), model folder configs and index files, latentdiff.json
and Python API arguments. Each case must end in success or our one line (exit 2/1, UsageError or
LatentDiffError), never a traceback and never a half-written file.

Generation is made cheap and bounded: a fixed 2 GiB "available memory" (so the memory estimate,
not the machine, decides what is too large) and, for the CLI, the session's tiny pipeline instead
of a load per case. The corpus of known cases is in test_refusals.py."""

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from latentdiff import Pipeline
from latentdiff.cli.main import main
from latentdiff.errors import LatentDiffError
from latentdiff.sampling.loop import SCHEDULERS

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MEMORY = 2**30 * 2

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
numbers_as_text = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "1e309",
        "nan",
        "inf",
        "-inf",
        "1.5",
        " 3",
        "0x10",
        "9" * 30,
        str(2**63),
        str(2**63 - 1),
        str(2**64),
        "1_000",
        "٣",
    ]
)
odd_text = numbers_as_text | st.text(max_size=15) | st.integers(-(10**20), 10**20).map(str)


@pytest.fixture(autouse=True)
def _bounded_memory():
    with mock.patch("latentdiff.runtime.memory.available_bytes", lambda device: MEMORY):
        yield


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own one-line usage errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_clean(code, out: str, err: str, out_dir: Path) -> None:
    """Success with complete PNGs, or one error line and exit 1/2; no partial file in any case."""
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code == 0:
        for line in out.splitlines():
            with Image.open(line) as im:
                im.load()
    else:
        assert out == "" and len(err.strip().splitlines()) == 1 and ": error: " in err, err
    leftovers = [p.name for p in out_dir.glob("*") if not p.name.endswith(".png")] if out_dir.exists() else []
    assert leftovers == []


@pytest.fixture(scope="module")
def cli_env(pipe_sd1, tiny_sd1):
    return tiny_sd1


def run_loaded(pipe, argv):
    """run_main with the session's tiny pipeline instead of a load per case (loading is fuzzed
    on its own below)."""
    threads = pipe.threads  # --num-threads sets it on this shared pipeline: given back after each case
    try:
        with mock.patch.object(Pipeline, "from_pretrained", lambda *a, **k: pipe):
            return run_main(argv)
    finally:
        pipe.threads = threads


def value_for(flag: str):
    valid = {
        "--steps": st.integers(1, 3).map(str),
        "--guidance": st.floats(0, 20).map(str),
        "--seed": st.integers(0, 2**63 - 1).map(str),
        "--width": st.sampled_from(["16", "32", "4096"]),
        "--height": st.sampled_from(["16", "32", "4096"]),
        "--num-images": st.integers(1, 2).map(str),
        "--num-threads": st.integers(1, 2).map(str),
        "--scheduler": st.sampled_from(list(SCHEDULERS)),
        "--device": st.sampled_from(["cpu", "auto"]),
        "--dtype": st.sampled_from(["fp32", "auto"]),
        "--negative": st.text(max_size=20),
        "--control": st.sampled_from(["a.png:cn", "a.png:cn:1:0:1", ":", "a:b:c:1:2", "x.png:m:nan", "p:m:1:0.5"]),
        "--control-module": st.sampled_from(["canny", "canny:50:150", "canny:0", "depth_midas", "tile_resample:9"]),
        "--control-res": st.sampled_from(["512", "63", "2049", "1.5"]),
        "--control-resize": st.sampled_from(["crop", "fit", "stretch", "cover"]),
        "--control-mode": st.sampled_from(["balanced", "prompt", "control", "guess", "Balanced"]),
        "--image-prompt": st.sampled_from(["a.png", "a.png:0.5", ":", "x.png:nan", "p:3", "a:b:1", "f.npy:2"]),
        "--ip-adapter": st.sampled_from(["ip-adapter_sd15.safetensors", "ip.bin", ":", "."]),
        "--image-encoder": st.sampled_from(["models", "image_encoder", ".", ""]),
        "--variations": st.sampled_from(["a.png", ".", "", "missing.png"]),
        "--noise-level": numbers_as_text,
        "--prior": st.sampled_from(["prior", ".", "", "a.png"]),
        "--prior-steps": numbers_as_text,
        "--prior-guidance": numbers_as_text,
        "--cfg-normalization": numbers_as_text,  # Z-Image's (refused on this SD model unless off)
        "--cfg-truncation": numbers_as_text,
        "--inpaint-area": st.sampled_from(["full", "whole", "masked", "Masked"]),
        "--only-masked-padding": numbers_as_text,
        "--hires-upscaler": st.sampled_from(["none", "lanczos", "nearest", "latent", "x.pth", "a.safetensors", "."]),
    }[flag]
    return valid | odd_text | st.sampled_from(["k_euler", "cuda:9", "mps", "cpu:5", "x" * 10_001])


FLAGS = [
    "--steps",
    "--guidance",
    "--seed",
    "--width",
    "--height",
    "--num-images",
    "--num-threads",
    "--scheduler",
    "--device",
    "--dtype",
    "--negative",
    "--control",
    "--control-module",
    "--control-res",
    "--control-resize",
    "--control-mode",
    "--image-prompt",
    "--ip-adapter",
    "--image-encoder",
    "--variations",
    "--noise-level",
    "--prior",
    "--prior-steps",
    "--prior-guidance",
    "--cfg-normalization",
    "--cfg-truncation",
    "--inpaint-area",
    "--only-masked-padding",
    "--hires-upscaler",
]


@settings(FUZZ, max_examples=400)
@given(
    prompt=st.text(max_size=30) | st.just("y" * 10_001),
    flags=st.lists(st.sampled_from(FLAGS), max_size=4),
    data=st.data(),
)
def test_fuzz_cli_flags(cli_env, pipe_sd1, prompt, flags, data):
    argv = ["generate", prompt, "--model", str(cli_env), "--quiet"]
    for flag in flags:
        argv += [flag, data.draw(value_for(flag))]
    if "--steps" not in flags:
        argv += ["--steps", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        code, out, err = run_loaded(pipe_sd1, [*argv, "--out", tmp])
        assert_clean(code, out, err, Path(tmp))


RECORDED = {
    "prompt": st.text(max_size=20),
    "steps": st.integers(1, 3),
    "guidance": st.floats(0, 10),
    "seed": st.integers(0, 2**63 - 1),
    "width": st.sampled_from([16, 32]),
    "height": st.sampled_from([16, 32]),
    "negative_prompt": st.text(max_size=10),
    "scheduler": st.sampled_from([None, *SCHEDULERS]),
    "dtype": st.sampled_from(["fp32", None]),
    "model": st.none(),
    "controls": st.just([]),
    "image_prompts": st.just([]),
    "noise_level": st.none() | st.integers(-2, 1200),  # Stable unCLIP's (refused on this SD model)
    "prior_steps": st.none() | st.integers(0, 3),
    "variations": st.none() | st.text(max_size=8),
    "cfg_truncation": st.none() | st.floats(-1, 2),
}


@settings(FUZZ, max_examples=300)
@given(data=st.data(), broken=st.sets(st.sampled_from(sorted(RECORDED)), max_size=3), raw=st.booleans())
def test_fuzz_from_png_metadata(cli_env, pipe_sd1, data, broken, raw):
    params = {k: data.draw(json_value if k in broken else s) for k, s in RECORDED.items()}
    text = data.draw(st.text(max_size=40)) if raw else json.dumps(params)
    with tempfile.TemporaryDirectory() as tmp:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("latentdiff", text)
        Image.new("RGB", (4, 4)).save(Path(tmp) / "in.png", pnginfo=info)
        code, out, err = run_loaded(
            pipe_sd1,
            [
                "generate",
                "--from",
                str(Path(tmp) / "in.png"),
                "--model",
                str(cli_env),
                "--quiet",
                "--out",
                str(Path(tmp) / "o"),
            ],
        )
        assert_clean(code, out, err, Path(tmp) / "o")


api_value = json_value | st.floats(allow_nan=True) | st.sampled_from([math.nan, math.inf, -1, 0, 2**63, b"x", 1j])


@settings(FUZZ, max_examples=1500)
@given(
    data=st.data(),
    broken=st.sets(
        st.sampled_from(
            ["prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed", "num_images", "scheduler"]
            + ["cfg_normalization", "cfg_truncation"]
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_api_arguments(pipe_sd1, data, broken):
    valid = {
        "prompt": st.text(max_size=10),
        "negative_prompt": st.text(max_size=10),
        "steps": st.just(1),
        "guidance": st.floats(0, 10),
        "width": st.just(16),
        "height": st.just(16),
        "seed": st.integers(0, 2**40),
        "num_images": st.just(1),
        "scheduler": st.sampled_from([None, "ddim"]),
        "cfg_normalization": st.just(0.0),  # Z-Image's: off on this SD model
        "cfg_truncation": st.sampled_from([None, 1.0]),
    }
    kwargs = {k: data.draw(api_value if k in broken else s) for k, s in valid.items()}
    try:
        images = pipe_sd1(**kwargs)
    except LatentDiffError as e:  # UsageError is one
        assert "\n" not in str(e) and str(e)
    else:
        size = tuple(pipe_sd1.native_size if kwargs[k] is None else kwargs[k] for k in ("width", "height"))
        count = (1 if isinstance(kwargs["prompt"], str) else len(kwargs["prompt"])) * int(kwargs["num_images"])
        assert len(images) == count and all(im.size == size for im in images)


ODD = st.sampled_from([None, -1, 0, 1, 2, 2.5, "1", "", math.nan, math.inf, -math.inf, b"x", [], {}, True, 2**63, 1j])


@settings(FUZZ, max_examples=300)
@given(
    data=st.data(),
    names=st.sets(
        st.sampled_from(
            ["num_inference_steps", "guidance_scale", "num_images_per_prompt", "generator", "steps", "guidance"]
        ),
        min_size=1,
    ),
)
def test_fuzz_diffusers_argument_names(pipe_sd1, data, names):
    """diffusers' names (and ours beside them): an image, or one line naming what to pass."""
    import torch

    generator = st.just(torch.Generator().manual_seed(3)) | st.just(torch.Generator().manual_seed(3).manual_seed(4))
    kwargs = {k: data.draw(generator | ODD if k == "generator" else ODD) for k in sorted(names)}
    try:
        images = pipe_sd1("x", width=16, height=16, **kwargs)
    except LatentDiffError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert images and all(im.size == (16, 16) for im in images)


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_fuzz_from_pretrained_arguments(data):
    """Rejected before any file is read: every argument has the wrong type or an unknown value."""
    kwargs = {
        "model": data.draw(st.integers() | st.lists(st.integers(), max_size=2) | st.just("a\0b")),
        "device": data.draw(odd_text | st.integers()),
        "dtype": data.draw(odd_text | st.none()),
        "offload": data.draw(odd_text | st.none() | st.integers()),
        "speed": data.draw(odd_text | st.integers() | st.lists(st.text(max_size=3), max_size=2)),
        "calls": data.draw(st.integers(max_value=-1) | st.text(max_size=3) | st.floats() | st.booleans()),
        "allow_pickle": data.draw(st.booleans() | st.integers() | st.text(max_size=3)),
    }
    name = data.draw(st.sampled_from(sorted(kwargs)))
    kwargs = {
        **{
            "model": "/nonexistent-model",
            "device": "cpu",
            "dtype": "fp32",
            "offload": "none",
            "allow_pickle": False,
            "speed": "off",
            "calls": None,
        },
        name: kwargs[name],
    }
    with pytest.raises(LatentDiffError) as e:
        Pipeline.from_pretrained(**kwargs)
    assert "\n" not in str(e.value)


# ---- model folders --------------------------------------------------------------------------------------

CONFIGS = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "scheduler/scheduler_config.json",
    "latentdiff.json",
    "tokenizer/tokenizer_config.json",
    "unet/diffusion_pytorch_model.safetensors.index.json",
]


def copy_model(src: Path, dst: Path) -> Path:
    """A copy whose weights are hard links (cheap); configs are real files we may rewrite."""
    shutil.copytree(
        src, dst, copy_function=lambda s, d: os.link(s, d) if s.endswith(".safetensors") else shutil.copy2(s, d)
    )
    return dst


@settings(FUZZ, max_examples=100)
@given(file=st.sampled_from(CONFIGS), whole=st.booleans(), key=st.text(max_size=8), data=st.data())
def test_fuzz_model_folder_files(tiny_sd1, file, whole, key, data):
    with tempfile.TemporaryDirectory() as tmp:
        model = copy_model(tiny_sd1, Path(tmp) / "m")
        path = model / file
        if file.endswith(".index.json"):  # make unet a sharded model first
            (model / "unet/diffusion_pytorch_model.safetensors").rename(model / "unet/shard.safetensors")
            current = {"weight_map": {"w": "shard.safetensors"}}
        else:
            current = json.loads(path.read_text()) if path.is_file() else {}
        if not whole and current:
            key = data.draw(st.sampled_from(sorted(current)))
        value = data.draw(json_value | st.sampled_from(["../../x.safetensors", "/etc/passwd", 10**12, -1, 0]))
        path.write_text(json.dumps(value if whole else {**current, key: value}))
        out = Path(tmp) / "o"
        code, stdout, err = run_main(
            [
                "generate",
                "x",
                "--model",
                str(model),
                "--steps",
                "1",
                "--width",
                "16",
                "--height",
                "16",
                "--quiet",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        assert_clean(code, stdout, err, out)
