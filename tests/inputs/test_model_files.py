"""Issue 24, model files: special files, deep nesting, wrong value types in every config, zero
embeddings, oversized safetensors headers and full disks, each refused at once in one line."""

import json
import os
import shutil
import signal
import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import small_disk
from safetensors.torch import save_file

from latentdiff import Pipeline
from latentdiff.cli.main import main
from latentdiff.errors import LatentDiffError, ModelError
from latentdiff.formats.convert import convert
from latentdiff.runtime.reading import MAX_DEPTH

DEEP = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)


@contextmanager
def within(seconds=20):
    """A hang fails the test (TimeoutError is no LatentDiffError) instead of blocking the suite."""

    def hang(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def refused(match, **kwargs) -> str:
    with within(), pytest.raises(LatentDiffError, match=match) as e:
        Pipeline.from_pretrained(device="cpu", **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(
        src, dst, copy_function=lambda s, d: os.link(s, d) if s.endswith("safetensors") else shutil.copy2(s, d)
    )
    return dst


@pytest.fixture(scope="module")
def single_file(tiny_sd1, tmp_path_factory):
    return convert(tiny_sd1, tmp_path_factory.mktemp("single") / "tiny.safetensors")


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


# ---- special files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "unet/diffusion_pytorch_model.safetensors",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
        "model_index.json",
        "latentdiff.json",
    ],
)
def test_a_fifo_in_a_model_folder_is_refused_at_once(tiny_sd1, tmp_path, rel):
    model = copy_model(tiny_sd1, tmp_path / "m")
    fifo(model / rel)
    refused(r"is a FIFO \(named pipe\); give a regular file", model=model)


def test_fifo_weights_under_another_name_or_as_a_shard(tiny_sd1, tmp_path):
    model = copy_model(tiny_sd1, tmp_path / "m")
    (model / "unet/diffusion_pytorch_model.safetensors").unlink()
    fifo(model / "unet/other.safetensors")
    refused("other.safetensors is a FIFO", model=model)
    (model / "unet/other.safetensors").unlink()
    fifo(model / "unet/shard.safetensors")
    (model / "unet/diffusion_pytorch_model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "shard.safetensors"}}'
    )
    refused("shard.safetensors is a FIFO", model=model)


@pytest.mark.parametrize("name", ["x.safetensors", "x.ckpt", "x.bin"])
def test_a_fifo_single_file_is_refused(tmp_path, name):
    refused(r"x\.\w+ is a FIFO", model=fifo(tmp_path / name), allow_pickle=True)


@pytest.mark.parametrize("kind", ["loras", "embeddings", "vae"])
def test_fifo_lora_embedding_and_vae_files_are_refused(tiny_sd1, tmp_path, kind):
    f = fifo(tmp_path / "x.safetensors")
    refused("x.safetensors is a FIFO", model=tiny_sd1, **{kind: str(f) if kind == "vae" else [str(f)]})


@pytest.mark.parametrize("scale", ["", ":0.5"])
def test_generate_lora_fifo_says_fifo_in_one_line(tiny_sd1, tmp_path, capsys, scale):
    """Issue 24: `generate --lora FIFO` said "is a folder without fifo"; a FIFO in a LoRA run folder too."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "latentdiff.json").write_text('{"lora": "fifo"}')
    for path in (fifo(tmp_path / "fifo"), fifo(run / "fifo")):
        argv = ["generate", "x", "--model", str(tiny_sd1), "--lora", f"{path if path.parent != run else run}{scale}"]
        with within():
            code = main([*argv, "--steps", "1", "--quiet", "--device", "cpu", "--out", str(tmp_path / "o")])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert f"--lora {path} is a FIFO (named pipe); give a regular file" in err
        assert "folder without" not in err


def test_a_fifo_vae_folder_config_and_sidecar_yaml(tiny_sd1, single_file, tmp_path):
    vae = copy_model(tiny_sd1, tmp_path / "m") / "vae"
    fifo(vae / "config.json")
    refused("config.json is a FIFO", model=tiny_sd1, vae=str(vae))
    f = tmp_path / "plain.safetensors"
    from safetensors import safe_open

    from latentdiff.formats.single_file import META_KEY

    with safe_open(str(single_file), "pt") as s:  # the same file without our metadata: the sidecar is read
        save_file(
            {k: s.get_tensor(k) for k in s.keys()}, f, metadata={k: v for k, v in s.metadata().items() if k != META_KEY}
        )
    fifo(f.with_suffix(".yaml"))
    refused("plain.yaml is a FIFO", model=f)
    f.with_suffix(".yaml").unlink()
    f.with_suffix(".yaml").write_text("model: " + DEEP)
    refused(f"nests .* at most {MAX_DEPTH}", model=f)


@pytest.mark.parametrize("how", ["folder", "missing"])
def test_a_tokenizer_without_its_vocabulary_is_refused(tiny_sd1, tmp_path, how):
    """Found by the fuzzing: tokenizer.json a folder (or gone) gave a 2-token tokenizer, every prompt padding."""
    model = copy_model(tiny_sd1, tmp_path / "m")
    (model / "tokenizer/tokenizer.json").unlink()
    if how == "folder":
        (model / "tokenizer/tokenizer.json").mkdir()
    refused("tokenizer.json is a folder" if how == "folder" else "holds neither tokenizer.json nor vocab", model=model)


# ---- deep nesting -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    ["model_index.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json", "latentdiff.json"],
)
def test_deep_nesting_in_any_config_is_one_line(tiny_sd1, tmp_path, rel):
    model = copy_model(tiny_sd1, tmp_path / "m")
    (model / rel).write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(f"nests 100001 levels deep; at most {MAX_DEPTH} are read", model=model)


def test_deep_nesting_in_a_shard_index_and_single_file_metadata(tiny_sd1, single_file, tmp_path):
    model = copy_model(tiny_sd1, tmp_path / "m")
    (model / "unet/diffusion_pytorch_model.safetensors.index.json").write_text('{"weight_map": ' + DEEP + "}")
    (model / "unet/diffusion_pytorch_model.safetensors").rename(model / "unet/shard.safetensors")
    refused("nests", model=model)
    f = tmp_path / "deep.safetensors"
    save_file({"a": torch.zeros(1)}, f, metadata={"latentdiff": '{"family": "sd1", "unet": ' + DEEP + "}"})
    refused("nests", model=f)


# ---- wrong value types in configs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel, key, value",
    [
        ("vae/config.json", "scaling_factor", "0.18215"),
        ("vae/config.json", "scaling_factor", [0.18]),
        ("vae/config.json", "latent_channels", 4.0),
        ("unet/config.json", "norm_eps", "1e-5"),
        ("unet/config.json", "layers_per_block", True),
        ("unet/config.json", "block_out_channels", [32, "64"]),
        ("unet/config.json", "attention_head_dim", [2, None]),
        ("scheduler/scheduler_config.json", "beta_start", "0.001"),
        ("scheduler/scheduler_config.json", "steps_offset", 1.5),
    ],
)
def test_a_string_where_a_number_belongs_is_refused_at_load(tiny_sd1, tmp_path, rel, key, value):
    model = copy_model(tiny_sd1, tmp_path / "m")
    config = json.loads((model / rel).read_text())
    (model / rel).write_text(json.dumps({**config, key: value}))
    line = refused(f"{key} must be", model=model)
    assert rel in line


@pytest.mark.parametrize(
    "rel, key, value",
    [("text_encoder/config.json", "num_attention_heads", -1), ("text_encoder/config.json", "num_attention_heads", 0)]
    + [("unet/config.json", "block_out_channels", [32, -64]), ("vae/config.json", "latent_channels", -4)],
)
def test_negative_counts_are_refused_at_load(tiny_sd1, tmp_path, rel, key, value):
    """Found by the fuzzing: -1 heads built a text encoder that failed at its first prompt."""
    model = copy_model(tiny_sd1, tmp_path / "m")
    config = json.loads((model / rel).read_text())
    (model / rel).write_text(json.dumps({**config, key: value}))
    refused(f"{key} = -?\\d+ is out of range \\(from [01] to ", model=model)


@pytest.mark.parametrize(
    "key, tensor, why",
    [
        ("up", torch.tensor(1.5), "a LoRA factor is a matrix of floats"),
        ("down", torch.zeros(4, 32, dtype=torch.int64), "a LoRA factor is a matrix of floats"),
        ("alpha", torch.ones(3), "an alpha is one number"),
        ("up", torch.full((32, 4), float("nan")), "not finite"),
    ],
)
def test_lora_tensors_diffusers_cannot_use_are_one_line(tiny_sd1, tmp_path, key, tensor, why):
    """Found by the fuzzing: a 0-d lora_up was an IndexError inside diffusers, NaN merged silently."""
    layer = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    lora = {f"{layer}.lora_down.weight": torch.zeros(4, 32), f"{layer}.lora_up.weight": torch.zeros(32, 4)}
    lora[f"{layer}.alpha"] = torch.tensor(2.0)
    lora[next(k for k in lora if f".{key}" in k or f"lora_{key}" in k)] = tensor
    save_file(lora, tmp_path / "l.safetensors")
    refused(why, model=tiny_sd1, loras=[str(tmp_path / "l.safetensors")])


def test_configs_in_single_file_metadata_are_checked_too(single_file, tmp_path):
    from safetensors import safe_open

    with safe_open(str(single_file), "pt") as s:
        tensors, meta = {k: s.get_tensor(k) for k in s.keys()}, s.metadata()
    own = json.loads(meta["latentdiff"])
    own["vae"]["scaling_factor"] = "0.18"
    f = tmp_path / "bad.safetensors"
    save_file(tensors, f, metadata={**meta, "latentdiff": json.dumps(own)})
    refused("scaling_factor must be a number", model=f)


# ---- embeddings and headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 32), (32, 0), (0,)])
def test_an_embedding_without_vectors_is_one_line(tiny_sd1, tmp_path, shape):
    f = tmp_path / "empty.safetensors"
    save_file({"emb_params": torch.zeros(shape)}, f)
    refused("empty.safetensors holds no vectors", model=tiny_sd1, embeddings=[str(f)])


def test_an_embedding_with_non_finite_vectors_is_one_line(tiny_sd1, tmp_path):
    f = tmp_path / "nan.safetensors"
    save_file({"emb_params": torch.full((1, 32), float("nan"))}, f)
    refused("nan.safetensors holds vectors that are not finite", model=tiny_sd1, embeddings=[str(f)])


@pytest.mark.parametrize("declared", [2**20 * 17, 99_000_000, 2**40])
def test_an_oversized_safetensors_header_is_refused_before_reading_it(tiny_sd1, tmp_path, declared):
    model = copy_model(tiny_sd1, tmp_path / "m")
    w = model / "unet/diffusion_pytorch_model.safetensors"
    data = w.read_bytes()
    w.unlink()
    w.write_bytes(struct.pack("<Q", declared) + data[8:])
    refused("safetensors header", model=model)


def test_a_header_that_claims_more_values_than_the_file_holds(tiny_sd1, tmp_path):
    from latentdiff.models.weights import parameter_count

    f = tmp_path / "c" / "model.safetensors"
    f.parent.mkdir()
    header = json.dumps({"a": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4]}}).encode()
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(ModelError, match="tensor 'a' claims 1,000,000,000,000 values in 4 bytes"):
        parameter_count(f.parent)  # a count from it would let a config allocate a trillion values


# ---- full disks ---------------------------------------------------------------------------------------


def _full_disk_line(capsys, argv) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1, err
    assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err
    return err


@pytest.mark.parametrize("direction", ["to_file", "to_folder"])
def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(tiny_sd1, single_file, tmp_path, capsys, direction):
    with small_disk(tmp_path / "disk", "256k") as disk:
        src, dst = (tiny_sd1, disk / "x.safetensors") if direction == "to_file" else (single_file, disk / "x")
        _full_disk_line(capsys, ["convert", str(src), str(dst)])
        assert list(disk.iterdir()) == []


def test_save_pretrained_on_a_full_disk_leaves_nothing(pipe_sd1, tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        with pytest.raises(LatentDiffError, match="No space left on device") as e:
            pipe_sd1.save_pretrained(disk / "out")
        assert "\n" not in str(e.value) and not isinstance(e.value, ModelError)
        assert list(disk.iterdir()) == []
        (disk / "kept").mkdir()
        (disk / "kept" / "notes.txt").write_text("mine")
        with pytest.raises(LatentDiffError, match="No space left on device"):
            pipe_sd1.save_pretrained(disk / "kept")
        assert [p.name for p in (disk / "kept").iterdir()] == ["notes.txt"]
