"""Issue 24: `latentdiff serve`'s options are bounded before anything heavy is imported: NaN,
infinities and huge finite values are refused with one line naming the option, its limit and why
(exit 2), the limits derived from the machine's memory as well as fixed ceilings."""

import math

import pytest

from latentdiff.cli.main import main
from latentdiff.errors import UsageError
from latentdiff.server import config
from latentdiff.server.config import MAX_QUEUE, ServeConfig

GIB = 2**30


@pytest.fixture
def ram(monkeypatch):
    """Pretend the machine has 8 GiB of memory."""
    monkeypatch.setattr(config, "machine_memory", lambda: 8 * GIB)


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(memory_budget_gb=math.nan), "--memory-budget must be > 0 GB and at most"),
        (dict(memory_budget_gb=math.inf), "--memory-budget must be > 0 GB and at most"),
        (dict(memory_budget_gb=1e300), "--memory-budget must be > 0 GB and at most"),
        (dict(memory_budget_gb=9), "at most 8.0 GB (this machine's memory"),
        (dict(memory_budget_gb=0), "--memory-budget must be > 0 GB"),
        (dict(max_body_mb=math.nan), "--max-body-mb must be > 0"),
        (dict(max_body_mb=math.inf), "--max-body-mb must be > 0"),
        (dict(max_body_mb=10**9), "--max-body-mb must be > 0 and at most 1024"),
        (dict(queue_size=0), "--queue-size must be >= 1"),
        (dict(queue_size=10**12), f"--queue-size must be at most {MAX_QUEUE}"),
        (dict(queue_size=MAX_QUEUE + 1), f"--queue-size must be at most {MAX_QUEUE}"),
        (dict(queue_size=1000, max_body_mb=16), "more than half this machine's 8.0 GiB"),
        (dict(ip_adapter_dir="/nonexistent/ipadapter"), "--ip-adapter-dir /nonexistent/ipadapter is not a directory"),
        (dict(lora_dir="/nonexistent/lora"), "--lora-dir /nonexistent/lora is not a directory"),
        (dict(embedding_dir="/nonexistent/e"), "--embedding-dir /nonexistent/e is not a directory"),
        (dict(vae_dir="/nonexistent/vae"), "--vae-dir /nonexistent/vae is not a directory"),
        (dict(a1111_pixels="maybe"), "--a1111-pixels must be on or off"),
        (dict(components="/nonexistent/models"), "--components is for a transformer file as --model"),
        (dict(offload="gpu"), "--offload must be one of none, model, sequential"),
        (dict(text_encoders=("/nonexistent/t5.safetensors",)), "--text-encoder /nonexistent/t5.safetensors: no such"),
        (dict(vae="/nonexistent/ae.safetensors"), "--vae /nonexistent/ae.safetensors: no such file or folder"),
    ],
)
def test_serve_options_are_bounded(tmp_path, ram, bad, words):
    with pytest.raises(UsageError, match="^--") as e:
        ServeConfig(out=str(tmp_path), **bad)
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "good",
    [
        dict(),
        dict(memory_budget_gb=8),
        dict(queue_size=256, max_body_mb=16),
        dict(queue_size=MAX_QUEUE, max_body_mb=0.1),
    ],
)
def test_serve_options_within_the_bounds_are_accepted(tmp_path, ram, good):
    ServeConfig(out=str(tmp_path), **good)


def test_the_bounds_fall_back_to_the_ceilings_where_memory_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "machine_memory", lambda: None)
    ServeConfig(out=str(tmp_path), memory_budget_gb=1000, queue_size=MAX_QUEUE)
    with pytest.raises(UsageError, match="at most 1024 GB"):
        ServeConfig(out=str(tmp_path), memory_budget_gb=1e300)


def test_the_machine_memory_is_known_here():
    assert config.machine_memory() > GIB


@pytest.mark.parametrize(
    "argv",
    [
        ["--memory-budget", "nan"],
        ["--memory-budget", "1e300"],
        ["--memory-budget=-inf"],
        ["--queue-size", str(10**12)],
        ["--max-body-mb", "nan"],
        ["--lora-dir", "/nonexistent/lora"],
        ["--a1111-pixels", "maybe"],
    ],
)
def test_bad_serve_options_are_one_line_exit_2(tmp_path, capsys, argv):
    """Before: `--queue-size 1000000000000` and a budget beyond the machine's memory started serving."""
    assert main(["serve", *argv, "--port", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentdiff: error: --") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_ip_adapter_dir_defaults_to_the_models_ipadapter_folder(tmp_path):
    (tmp_path / "models" / "ipadapter").mkdir(parents=True)
    cfg = ServeConfig(out=str(tmp_path / "o"), models_dir=str(tmp_path / "models"))
    assert cfg.adapter_dir() == (tmp_path / "models" / "ipadapter").resolve()
    assert ServeConfig(out=str(tmp_path / "o")).adapter_dir() is None
    assert ServeConfig(out=str(tmp_path / "o"), ip_adapter_dir=str(tmp_path)).adapter_dir() == tmp_path.resolve()


def test_the_add_on_folders_default_to_a1111s_folders_beside_the_models(tmp_path):
    models = tmp_path / "models"
    for name in ("Lora", "embeddings", "VAE"):
        (models / name).mkdir(parents=True)
    (models / "styles.csv").write_text("name,prompt,negative_prompt\n")
    cfg = ServeConfig(out=str(tmp_path / "o"), models_dir=str(models))
    found = cfg.lora_folder(), cfg.embedding_folder(), cfg.vae_folder(), cfg.styles_file()
    assert found == tuple((models / n).resolve() for n in ("Lora", "embeddings", "VAE", "styles.csv"))
    bare = ServeConfig(out=str(tmp_path / "o"))
    assert (bare.lora_folder(), bare.embedding_folder(), bare.vae_folder(), bare.styles_file()) == (None,) * 4
    assert ServeConfig(out=str(tmp_path / "o"), lora_dir=str(tmp_path)).lora_folder() == tmp_path.resolve()
