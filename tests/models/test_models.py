"""Loading models: the safetensors-only policy, format by content, damaged files, bad model
references (local, hub, shipped default). Errors must be one clear line, never a traceback."""

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentdiff import Pipeline
from latentdiff.cli.main import main
from latentdiff.errors import ModelError

UNET_ST = "unet/diffusion_pytorch_model.safetensors"
UNET_BIN = "unet/diffusion_pytorch_model.bin"
ARGS = dict(steps=2, seed=5)


@pytest.fixture
def model(tiny_sd1, tmp_path):
    """A private copy of the tiny model that a test may damage."""
    return Path(shutil.copytree(tiny_sd1, tmp_path / "model"))


@pytest.fixture(scope="module")
def reference(pipe_sd1):
    return np.asarray(pipe_sd1("a red apple", **ARGS)[0])


def load(path, **kwargs):
    pipe = Pipeline.from_pretrained(path, device="cpu", dtype="fp32", **kwargs)
    pipe.progress = False
    return pipe


def cli_error(capsys, *argv) -> tuple[int, str]:
    """Run `latentdiff generate ...` in-process; return (exit code, the single stderr line)."""
    code = main(["generate", *map(str, argv), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("latentdiff: error: ")
    return code, lines[0]


def to_pickle(model: Path) -> Path:
    """Replace the unet's safetensors with a torch.save pickle of the same tensors."""
    st = model / UNET_ST
    torch.save(load_file(st), model / UNET_BIN)
    st.unlink()
    return model / UNET_BIN


# ---- safetensors only, unless the user opts in --------------------------------------------


def test_pickle_only_model_is_refused_naming_file_and_flag(model, capsys):
    to_pickle(model)
    with pytest.raises(ModelError) as e:
        load(model)
    assert UNET_BIN in str(e.value) and "--allow-pickle" in str(e.value)
    code, line = cli_error(capsys, "x", "--model", model, "--out", model.parent / "out")
    assert code == 2 and "diffusion_pytorch_model.bin" in line and "--allow-pickle" in line
    assert not (model.parent / "out").exists()


def test_pickle_loads_with_allow_pickle_and_gives_the_same_image(model, reference):
    to_pickle(model)
    image = load(model, allow_pickle=True)("a red apple", **ARGS)[0]
    assert np.array_equal(np.asarray(image), reference)


class _Payload:
    """Unpickling this calls `os.system(...)`: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _make_marker(path):
    Path(path).write_text("pwned")


class _FunctionPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_make_marker, (str(self.marker),))


def _raw_pickle(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.mark.parametrize("payload", [_Payload, _FunctionPayload])
@pytest.mark.parametrize("write", [torch.save, _raw_pickle])
def test_malicious_pickle_is_never_executed_even_with_allow_pickle(model, tmp_path, capsys, payload, write):
    marker = tmp_path / "marker"
    sd = load_file(model / UNET_ST)
    (model / UNET_ST).unlink()
    write({**sd, "conv_in.weight": payload(marker)}, model / UNET_BIN)
    for allow in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a library warning would be a second stderr line in the CLI
            with pytest.raises(ModelError, match="diffusion_pytorch_model.bin"):
                load(model, allow_pickle=allow)
    code, line = cli_error(capsys, "x", "--model", model, "--allow-pickle", "--out", tmp_path / "out")
    assert code == 2 and "refused to load" in line and "could run code" in line
    assert not marker.exists(), "the pickle payload ran"


def test_format_is_decided_by_content_not_extension(model, tiny_sd1, tmp_path, reference):
    # a pickle dressed as safetensors is refused as a pickle, not parsed as broken safetensors
    to_pickle(model).rename(model / UNET_ST)
    with pytest.raises(ModelError, match="is a pickle file.*--allow-pickle"):
        load(model)
    # real safetensors bytes under a .bin name need no flag
    other = Path(shutil.copytree(tiny_sd1, tmp_path / "other"))
    (other / UNET_ST).rename(other / UNET_BIN)
    image = load(other)("a red apple", **ARGS)[0]
    assert np.array_equal(np.asarray(image), reference)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_damaged_weights_name_the_file(model, capsys, damage):
    st = model / UNET_ST
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    with pytest.raises(
        ModelError, match=r"truncated or corrupt" if damage == "truncate" else r"empty \(0 bytes\)"
    ) as e:
        load(model)
    assert str(st) in str(e.value)
    code, line = cli_error(capsys, "x", "--model", model)
    assert code == 2 and "diffusion_pytorch_model.safetensors" in line


def test_weights_that_do_not_fit_the_config(model, capsys):
    cfg_path = model / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["block_out_channels"] = [16, 32]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="do not fit its config: size mismatch"):
        load(model)
    code, line = cli_error(capsys, "x", "--model", model)
    assert code == 2 and str(model / "unet") in line


# ---- model references ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing_component", "lacks component folder(s): vae"),
        ("empty_dir", "is empty"),
        ("not_a_model", "not a diffusers-format model: model_index.json is missing"),
        ("nonexistent", "not found: no such directory"),
    ],
)
def test_bad_model_paths_exit_2_with_one_line(model, tmp_path, capsys, setup, message):
    target = {
        "missing_component": model,
        "empty_dir": tmp_path / "empty",
        "not_a_model": tmp_path / "photos",
        "nonexistent": tmp_path / "no" / "such" / "model",
    }[setup]
    if setup == "missing_component":
        shutil.rmtree(model / "vae")
    elif setup == "empty_dir":
        target.mkdir()
    elif setup == "not_a_model":
        target.mkdir()
        (target / "cat.jpg").write_bytes(b"not really")
    code, line = cli_error(capsys, "x", "--model", target, "--out", tmp_path / "out")
    assert code == 2 and message in line and str(target) in line


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline. huggingface_hub reads its constants at import, so
    the environment alone would not redirect an already-imported library."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # so 'someone/some-model' is not also a local path
    return cache


def test_hub_id_offline_and_not_cached_is_one_clear_error(empty_hf_cache, capsys):
    code, line = cli_error(capsys, "x", "--model", "someone/some-model")
    assert code == 2
    assert "'someone/some-model'" in line and "nor in the Hugging Face cache" in line
    assert "HF_HUB_OFFLINE" in line


def test_hub_id_is_served_from_the_cache_offline(empty_hf_cache, tiny_sd1, reference):
    repo = empty_hf_cache / "models--someone--some-model"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_sd1, repo / "snapshots" / commit)
    pipe = load("someone/some-model")
    assert pipe.model_dir == repo / "snapshots" / commit
    image = pipe("a red apple", **ARGS)[0]
    assert image.info["latentdiff"]["model"] == "someone/some-model"
    assert np.array_equal(np.asarray(image), reference)


def test_missing_shipped_default_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENTDIFF_DEFAULT_MODEL", str(tmp_path / "emoji"))
    (tmp_path / "emoji").mkdir()
    with pytest.raises(ModelError, match="shipped default model is not present"):
        Pipeline.from_pretrained()
    code, line = cli_error(capsys, "x", "--out", tmp_path / "out")
    assert code == 2 and "shipped default model is not present" in line and str(tmp_path / "emoji") in line
