"""Regression corpus of issue 16: every adversarial input it lists ends in one line and the right
exit code (or, where the input is valid, in images), never a traceback. Fuzzing: test_fuzz.py."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import load_file

from latentdiff import Pipeline, UsageError
from latentdiff.cli.main import main
from latentdiff.errors import LatentDiffError, ModelError

BIG = 10**10


def one_line(capsys, argv, code):
    """Run `latentdiff generate ARGV` in-process; assert the exit code and one error line."""
    got = main(["generate", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    assert got == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("latentdiff: error: ")
    return err.strip()


# ---- CLI flags (points 2 and 7) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "100000000"], "--steps must be <= 10000, got 100000000"),
        (["--steps", str(10**9)], "--steps must be <= 10000"),
        (
            ["--steps", "1001", "--scheduler", "ddim"],
            "steps must be <= 1000 (the model's number of training timesteps)",
        ),
        (["--steps", "1001", "--scheduler", "ddpm"], "steps must be <= 1000"),
        (["--width", "1000000"], "--width must be <= 16384, got 1000000"),
        (["--num-images", str(10**9)], "--num-images must be <= 10000"),
        (["--device", "cpu:5"], "unknown device 'cpu:5'"),
        (["--guidance", "nan"], "--guidance must be a finite number, got nan"),
        (["--control", "x.png"], "--control must be IMAGE:MODEL[:WEIGHT[:START:END]], got 'x.png'"),
        (["--control-module", "canny"], "need --control IMAGE:MODEL"),
        (["--control-mode", "Balanced"], "argument --control-mode: invalid choice: 'Balanced'"),
        (["--guidance", "inf"], "--guidance must be a finite number, got inf"),
        (["--seed", str(2**63)], "--seed must be <= 9223372036854775807"),
        (
            ["--seed", str(2**63 - 1), "--num-images", "2"],
            "would need seeds beyond 2^63 - 1; use at most 9223372036854775806",
        ),
    ],
)
def test_bad_flags_are_one_line(tiny_sd1, tmp_path, capsys, argv, message):
    line = one_line(capsys, ["x", "--model", tiny_sd1, "--out", tmp_path / "o", "--device", "cpu", *argv], 2)
    assert message in line
    assert not (tmp_path / "o").exists()


def test_the_largest_seed_is_allowed(tiny_sd1, tmp_path, capsys):
    out = tmp_path / "o"
    assert (
        main(
            [
                "generate",
                "x",
                "--model",
                str(tiny_sd1),
                "--out",
                str(out),
                "--steps",
                "1",
                "--quiet",
                "--device",
                "cpu",
                "--seed",
                str(2**63 - 1),
            ]
        )
        == 0
    )
    assert [p.name for p in out.iterdir()] == [f"x-s{2**63 - 1}-0000.png"]


def test_a_size_beyond_memory_is_refused_with_the_figure(tiny_sd1, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 2**30)
    line = one_line(
        capsys,
        ["x", "--model", tiny_sd1, "--out", tmp_path, "--device", "cpu", "--width", "4096", "--height", "4096"],
        2,
    )
    assert line == (
        "latentdiff: error: a 4096x4096 image needs about 7.1 GiB of memory, but only 1.0 GiB is "
        "available on cpu; choose a smaller size"
    )


def test_batches_shrink_to_fit_memory_instead_of_failing(pipe_sd1, monkeypatch):
    import latentdiff.runtime.memory as resources

    sizes = []
    real = resources.generation_bytes
    monkeypatch.setattr(
        resources,
        "available_bytes",
        lambda device: real(pipe_sd1.components.unet.config, pipe_sd1.components.vae.config, 2, 64, 64, True, 4, 4),
    )
    monkeypatch.setattr(
        "latentdiff.workflows.text_to_image.generate_batch",
        lambda pipe, jobs, request, first=0: sizes.append(len(jobs)) or [],
    )
    pipe_sd1("x", steps=1, num_images=5)
    assert sizes == [2, 2, 1]


def test_cpu_allocation_failure_is_one_line(pipe_sd1, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 36000000000000 bytes. Error code 12"
        )

    monkeypatch.setattr("latentdiff.workflows.text_to_image.sample", fail)
    with pytest.raises(LatentDiffError, match=r"^out of memory while generating 1 image\(s\) of 64x64 on cpu; "):
        pipe_sd1("x", steps=1)


def test_cuda_allocation_failure_is_one_line(pipe_sd1, monkeypatch):
    def fail(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("latentdiff.workflows.text_to_image.sample", fail)
    with pytest.raises(LatentDiffError, match="^out of memory while generating"):
        pipe_sd1("x", steps=1)


def test_a_refused_request_allocates_nothing(tiny_sd1, tmp_path):
    """In a fresh process: 16384x16384 needs ~114 GiB; it is refused and RSS stays at start-up size."""
    from latentdiff.runtime.memory import available_bytes

    if (available_bytes(torch.device("cpu")) or 0) > 120 * 2**30:
        pytest.skip("this machine has memory for the request, so it would not be refused")
    # VmHWM is this process's own peak; ru_maxrss carries the forking pytest's RSS over the exec
    code = (
        "import sys; from latentdiff.cli.main import main; "
        "peak_rss_kib = lambda: int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))); "
        f"c = main(['generate', 'x', '--model', {str(tiny_sd1)!r}, '--out', {str(tmp_path)!r}, '--quiet', "
        "'--device', 'cpu', '--width', '16384', '--height', '16384']); "
        "print(peak_rss_kib()); sys.exit(c)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 2 and "needs about 114.0 GiB of memory" in r.stderr, r.stderr
    peak_kib = int(r.stdout.split()[-1])
    assert peak_kib < 2 * 2**20, f"peak RSS {peak_kib} KiB"  # torch + the tiny model, not the request
    assert list(tmp_path.iterdir()) == []


# ---- Python API (point 8) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": None}, "prompt must be a string or a non-empty list of strings, got None"),
        ({"prompt": []}, "prompt must be a string or a non-empty list"),
        ({"prompt": ["a", 3]}, "prompt must be a string, got 3"),
        ({"steps": "abc"}, "steps must be a whole number, got 'abc'"),
        ({"steps": math.nan}, "steps must be a whole number, got nan"),
        ({"steps": 2.5}, "steps must be a whole number, got 2.5"),
        ({"steps": True}, "steps must be a whole number, got True"),
        ({"width": math.nan}, "width must be a whole number, got nan"),
        ({"height": math.inf}, "height must be a whole number, got inf"),
        ({"scheduler": 5}, "scheduler must be a scheduler name (a string), got 5"),
        ({"guidance": "7"}, "guidance must be a finite number, got '7'"),
        ({"guidance": 1e300}, "guidance must be <= 100"),
        ({"seed": 2**64}, "seed must be <= 9223372036854775807"),
        ({"seed": "1"}, "seed must be a whole number"),
        ({"num_images": 10**12}, "num_images must be <= 10000"),
        ({"negative_prompt": 3}, "negative_prompt must be a string, got 3"),
        ({"prompt": "x" * 10_001}, "prompt is 10,001 characters long; at most 10,000 are accepted"),
    ],
)
def test_bad_api_arguments_raise_usage_error_naming_them(pipe_sd1, kwargs, message):
    kwargs = {"prompt": "x", "steps": 1, **kwargs}
    with pytest.raises(UsageError) as e:
        pipe_sd1(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": 123}, "model must be a path (a string), got 123"),
        ({"model": "a\0b"}, "model contains a NUL character"),
        ({"device": 5}, "unknown device 5"),
        ({"device": "cpu:5"}, "unknown device 'cpu:5'"),
        ({"dtype": None}, "unknown dtype None"),
        ({"offload": "gpu"}, "unknown offload 'gpu'; use none, model, sequential"),
        ({"allow_pickle": "yes"}, "allow_pickle must be True or False, got 'yes'"),
    ],
)
def test_bad_from_pretrained_arguments(tiny_sd1, kwargs, message):
    with pytest.raises(UsageError) as e:
        Pipeline.from_pretrained(**{"model": tiny_sd1, **kwargs})
    assert message in str(e.value)


# ---- --from with crafted PNGs (point 4) -----------------------------------------------------------------


def crafted_png(path: Path, params, size=(8, 8)) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("latentdiff", params if isinstance(params, str) else json.dumps(params))
    Image.new("RGB", size).save(path, pnginfo=info)
    return path


GOOD = {
    "prompt": "a red apple",
    "steps": 1,
    "guidance": 7.5,
    "seed": 0,
    "width": 32,
    "height": 32,
    "negative_prompt": "",
    "scheduler": None,
    "dtype": "fp32",
}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", "2", "the steps recorded in {png} must be a whole number, got '2'"),
        ("steps", 10**30, "the steps recorded in {png} must be <= 10000"),
        ("guidance", [1], "the guidance recorded in {png} must be a finite number, got [1]"),
        ("seed", -1, "the seed recorded in {png} must be >= 0, got -1"),
        ("seed", 1.5, "the seed recorded in {png} must be a whole number, got 1.5"),
        ("width", {"w": 1}, "the width recorded in {png} must be a whole number"),
        ("height", 10**6, "the height recorded in {png} must be <= 16384"),
        ("negative_prompt", 5, "the negative recorded in {png} must be a string, got 5"),
        ("scheduler", ["ddim"], "the scheduler recorded in {png} must be a scheduler name (a string)"),
        ("dtype", 3, "unknown dtype 3"),
        ("model", 7, "the model recorded in {png} must be a path (a string), got 7"),
        ("prompt", None, "the prompt recorded in {png} must be a string, got None"),
        ("prompt", "p" * 500_000, "the prompt recorded in {png} is 500,000 characters long"),  # larger: test_cli_files
        ("controls", "canny", "the controls recorded in {png} must be a list of units"),
        ("controls", [{"image": 3, "model": None}], "{png} used ControlNet 0 (None [?]) but does not record its"),
        ("controls", [{"image": "/no/pic.png", "model": "/no/cn"}], "the control image recorded in {png}, /no/pic"),
    ],
)
def test_from_with_wrong_types_and_huge_values(tiny_sd1, tmp_path, capsys, field, value, message):
    png = crafted_png(tmp_path / "in.png", {**GOOD, field: value})
    model = [] if field == "model" else ["--model", tiny_sd1]  # a flag given overrides the recorded value
    line = one_line(capsys, ["--from", png, *model, "--out", tmp_path / "o", "--device", "cpu"], 2)
    assert message.format(png=png) in line


def test_from_a_decompression_bomb(tmp_path, capsys):
    """A PNG declaring 20000x20000 pixels: only its text chunks are read, its pixels never decoded."""
    png = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(png)
    line = one_line(capsys, ["--from", png, "--out", tmp_path / "o"], 2)
    assert f"--from image {png} has no latentdiff parameters" in line


def test_from_a_good_crafted_png_still_works(tiny_sd1, tmp_path, capsys):
    png = crafted_png(tmp_path / "in.png", GOOD)
    assert (
        main(
            [
                "generate",
                "--from",
                str(png),
                "--model",
                str(tiny_sd1),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a-red-apple-s0-0000.png"]


# ---- model folders (points 5, 6, 7) ---------------------------------------------------------------------


@pytest.fixture
def folder(tiny_sd1, tmp_path):
    return Path(shutil.copytree(tiny_sd1, tmp_path / "model"))


def edit(path: Path, change):
    data = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(change(data) if callable(change) else change))


@pytest.mark.parametrize(
    "file, change, message",
    [
        ("unet/config.json", None, "must hold a JSON object, not NoneType"),
        ("unet/config.json", [1], "must hold a JSON object, not list"),  # diffusers: "check your internet connection"
        ("unet/config.json", lambda c: {**c, "block_out_channels": "abc"}, "block_out_channels must be a list of"),
        (
            "unet/config.json",
            lambda c: {**c, "block_out_channels": [32, 10**6]},
            "describes a model of 122,001,726,182,788 values",
        ),
        (
            "unet/config.json",
            lambda c: {**c, "layers_per_block": BIG},
            "layers_per_block = 10000000000 is out of range",
        ),
        ("unet/config.json", lambda c: {**c, "down_block_types": ["Nope", "DownBlock2D"]}, "Nope does not exist"),
        ("vae/config.json", lambda c: {**c, "block_out_channels": [0]}, "is not a usable config"),
        (
            "vae/config.json",
            lambda c: {**c, "scaling_factor": float("nan")},
            "scaling_factor is nan, not a finite number",
        ),
        ("text_encoder/config.json", None, "must hold a JSON object"),
        (
            "text_encoder/config.json",
            lambda c: {**c, "max_position_embeddings": BIG},
            "describes a model of 330,000,030,474 values",
        ),
        (
            "text_encoder/config.json",
            lambda c: {**c, "hidden_size": "x"},
            "hidden_size must be a whole number (like 512), got 'x'",
        ),
        ("scheduler/scheduler_config.json", None, "must hold a JSON object"),
        (
            "scheduler/scheduler_config.json",
            lambda c: {**c, "num_train_timesteps": 0},
            "num_train_timesteps must be a whole number from 1 to 100,000, got 0",
        ),
        ("scheduler/scheduler_config.json", lambda c: {**c, "num_train_timesteps": BIG}, "got 10000000000"),
        (
            "scheduler/scheduler_config.json",
            lambda c: {**c, "_class_name": "UNet2DConditionModel"},
            "is not a diffusers scheduler",
        ),
        (
            "scheduler/scheduler_config.json",
            lambda c: {**c, "prediction_type": "bogus"},
            "prediction_type must be one of",
        ),
        ("latentdiff.json", [1], "latentdiff.json must hold a JSON object, not list"),
        ("latentdiff.json", {"steps": "abc"}, "the steps recorded in"),
        ("latentdiff.json", {"guidance": [1]}, "the guidance recorded in"),
        ("model_index.json", None, "model_index.json must hold a JSON object"),
        ("tokenizer/tokenizer_config.json", [1], "cannot read the tokenizer"),
    ],
)
def test_malformed_model_folders(folder, tmp_path, capsys, file, change, message):
    edit(folder / file, change)
    line = one_line(capsys, ["x", "--model", folder, "--out", tmp_path / "o", "--device", "cpu", "--steps", 1], 2)
    assert message in line


def shard(folder: Path, weight_map) -> Path:
    """Turn unet's single weights file into a one-shard model with the given weight_map."""
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "shard-1.safetensors")
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return unet


@pytest.mark.parametrize("target", ["../../outside/x.safetensors", "/etc/passwd", "..\\..\\x.safetensors", "C:x"])
def test_index_files_cannot_name_files_outside_the_folder(folder, tmp_path, capsys, target):
    (tmp_path / "outside").mkdir()
    shard(folder, {"a": "shard-1.safetensors", "b": target})
    line = one_line(capsys, ["x", "--model", folder, "--out", tmp_path / "o", "--device", "cpu"], 2)
    assert "outside its folder" in line and "refusing to open it" in line


def test_an_index_link_leading_outside_is_refused(folder, tmp_path, capsys):
    (tmp_path / "secret").write_text("x")
    unet = shard(folder, {"a": "shard-1.safetensors", "b": "link.safetensors"})
    (unet / "link.safetensors").symlink_to(tmp_path / "secret")
    assert "a link that leads outside the model" in one_line(capsys, ["x", "--model", folder, "--device", "cpu"], 2)


@pytest.mark.parametrize("index", [None, [1], {"weight_map": None}, {"weight_map": {"a": 3}}, {"weight_map": {}}])
def test_malformed_index_files(folder, tmp_path, capsys, index):
    unet = shard(folder, {})
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    line = one_line(capsys, ["x", "--model", folder, "--out", tmp_path / "o", "--device", "cpu"], 2)
    assert "index" in line or "not a file name" in line


def _generates(folder, tmp_path, *extra) -> bool:
    argv = ["generate", "x", "--model", str(folder), "--out", str(tmp_path / "o"), "--steps", "1", "--quiet"]
    return main([*argv, "--device", "cpu", *extra]) == 0


def test_a_sharded_model_inside_its_folder_loads(folder, tmp_path, capsys):
    shard(folder, {"a": "shard-1.safetensors"})
    assert _generates(folder, tmp_path)


def test_a_pickle_named_safetensors_loads_with_allow_pickle(folder, tmp_path, capsys):
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = {k: v.clone() for k, v in load_file(weights).items()}
    torch.save(state, weights)
    assert _generates(folder, tmp_path, "--allow-pickle")


def test_a_torchscript_file_never_suggests_weights_only_false(folder, capsys):
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(unet / "diffusion_pytorch_model.bin"))
    from latentdiff.models.weights import load_state_dict

    with pytest.raises(ModelError) as e:
        load_state_dict(unet / "diffusion_pytorch_model.bin", allow_pickle=True)
    assert "TorchScript archive" in str(e.value) and "weights_only" not in str(e.value)


@pytest.mark.parametrize("cache", ["[1, 2]", "null", '"text"', '{"key": 5}'])
def test_a_hash_cache_that_is_not_an_object_is_ignored(tiny_sd1, tmp_path, monkeypatch, cache):
    import latentdiff.models.fingerprint as fingerprint

    path = tmp_path / "hashes.json"
    path.write_text(cache)
    monkeypatch.setattr(fingerprint, "_CACHE", path)
    assert len(fingerprint.model_hash(tiny_sd1)) == 12
    assert isinstance(json.loads(path.read_text()), dict)


@pytest.mark.parametrize(
    "file, key, value, message",
    [
        (
            "tokenizer/tokenizer_config.json",
            "model_max_length",
            None,
            "model_max_length is 1000000000000000019884624838656",
        ),
        ("tokenizer/tokenizer_config.json", "model_max_length", 5.4e16, "model_max_length is 5.4e+16"),
        ("tokenizer/tokenizer_config.json", "model_max_length", "../x", "model_max_length is '../x'"),
        ("tokenizer/tokenizer_config.json", "model_max_length", 78, "from 3 to the text encoder's 77 positions"),
        (
            "tokenizer/tokenizer_config.json",
            "bos_token",
            "../../x.safetensors",
            "bos_token '../../x.safetensors' is not in",
        ),
        ("text_encoder/config.json", "layer_norm_eps", None, "layer_norm_eps must be a number (like 1e-05), got None"),
        ("text_encoder/config.json", "hidden_size", "32", "hidden_size must be a whole number (like 512), got '32'"),
        ("text_encoder/config.json", "num_hidden_layers", 2.5, "num_hidden_layers must be a whole number"),
    ],
)
def test_text_configs_the_encoder_cannot_take_are_one_line(tiny_sd1, tmp_path, capsys, file, key, value, message):
    """Found by the fuzzing (a TypeError, OverflowError or IndexError deep in tokenizing or in torch before): a
    tokenizer whose window or special tokens its encoder cannot take, or a text-encoder config with a non-number
    where CLIPTextConfig holds a number, is refused in one line when the model loads."""
    model = shutil.copytree(tiny_sd1, tmp_path / "model")
    path = model / file
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    code = main(["generate", "x", "--model", str(model), "--steps", "1", "--out", str(tmp_path / "out"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err
