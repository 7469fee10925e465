"""Fuzzing the training front doors (issue 24), each case inside a memory cap so a blow-up fails the
test instead of the machine: finetune's and train-vae's size-like values at and past their bounds, the
memory checks against any free memory, dataset contents (names with non-UTF-8 bytes, NUL bytes in
metadata, nested and oversized metadata, truncated images, special files) and damaged run files.
Every case ends in a result or one UsageError line, never another exception."""

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import memory_cap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.training import bounds
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.clip_config import ClipTrainConfig
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.data.scan import scan_dataset
from latentdiff.training.recipe import saved_recipe
from latentdiff.training.vae_config import VaeTrainConfig

FUZZ = settings(
    derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck), max_examples=150
)


def one_line(e: Exception) -> str:
    text = str(e)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def around(most: int):
    """Integers at, just past and far past a bound, and the awkward ones (0, negatives, huge)."""
    return st.one_of(
        st.sampled_from([most - 1, most, most + 1, 0, -1, 2**31, 2**63, 2**70, 10**30]),
        st.integers(min_value=-(2**64), max_value=2**64),
    )


FINETUNE_INTS = {name: most for name, (most, _) in bounds.CEILINGS.items() if name != "eval_train_images"}
FINETUNE_FLOATS = (
    *("lr", "caption_dropout", "snr_gamma", "noise_offset", "ema_decay", "weight_decay"),
    *("logit_mean", "logit_std", "mode_scale", "flow_shift", "guidance"),
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(sorted(FINETUNE_INTS)), st.deferred(lambda: around(8192) | around(4096)), max_size=4
    ),
    st.dictionaries(
        st.sampled_from(FINETUNE_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.integers(-(2**70), 2**70),
        max_size=2,
    ),
    st.lists(st.text(max_size=5), max_size=300),
)
def test_finetune_config_values_at_and_past_their_bounds(ints, floats, prompts):
    with memory_cap(2**30):
        try:
            cfg = FinetuneConfig(dataset="d", out="o", model="m", validation_prompts=prompts, **ints, **floats)
        except UsageError as e:
            one_line(e)
            return
    for name, most in FINETUNE_INTS.items():
        value = getattr(cfg, name)
        assert value is None or value <= most, (name, value)
    assert len(cfg.validation_prompts) <= bounds.MAX_VALIDATION_PROMPTS


VAE_INTS = ("resolution", "batch_size", "eval_train_images", "max_steps", "warmup_steps", "num_threads")


@FUZZ
@given(st.dictionaries(st.sampled_from(VAE_INTS), around(8192) | around(4096), max_size=3))
def test_train_vae_config_values_at_and_past_their_bounds(ints):
    arch = {"block_out_channels": [8, 16]}
    with memory_cap(2**30):
        try:
            cfg = VaeTrainConfig(dataset="d", out="o", vae=arch, **ints)
        except UsageError as e:
            one_line(e)
            return
    assert all(getattr(cfg, n) is None or getattr(cfg, n) <= bounds.CEILINGS[n][0] for n in VAE_INTS)


CLIP_INTS = (*VAE_INTS, "projection_dim")
VISION_VALUES = st.one_of(around(8192), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none())


@FUZZ
@given(
    st.dictionaries(st.sampled_from(CLIP_INTS), around(8192) | around(4096), max_size=3),
    st.dictionaries(
        st.sampled_from(["patch_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"])
        | st.text(max_size=8),
        VISION_VALUES,
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["lr", "text_lr", "weight_decay", "max_grad_norm"]),
        st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.integers(-(2**70), 2**70),
        max_size=2,
    ),
)
def test_train_clip_config_values_at_and_past_their_bounds(ints, vision, floats):
    with memory_cap(2**30):
        try:
            cfg = ClipTrainConfig(dataset="d", out="o", model="m", vision=vision, **ints, **floats)
        except UsageError as e:
            one_line(e)
            return
    assert all(getattr(cfg, n) is None or getattr(cfg, n) <= bounds.CEILINGS[n][0] for n in VAE_INTS)
    assert cfg.resolution % cfg.vision.get("patch_size", 8) == 0 and cfg.lr > 0 and cfg.projection_dim >= 1


@pytest.fixture(scope="module")
def components(tiny_sd1):
    from latentdiff.models.assemble import load_components

    return load_components(tiny_sd1, False)


@settings(FUZZ, max_examples=120)
@given(
    resolution=st.sampled_from([8, 64, 512, 1024, 4096, 8192]),
    batch=st.sampled_from([1, 2, 64, 4096]),
    rank=st.sampled_from([1, 4, 32, 33, 4096]),
    images=st.integers(1, 10**6),
    free=st.sampled_from([0, 10**6, 2**30, 2**34, None]),
    flags=st.fixed_dictionaries(
        {
            "gradient_checkpointing": st.booleans(),
            "cache": st.booleans(),
            "mixed_precision": st.sampled_from(["no", "bf16"]),
        }
    ),
)
def test_memory_checks_refuse_what_does_not_fit(components, monkeypatch, resolution, batch, rank, images, free, flags):
    """Any size against any free memory: refused in one line naming the option, or within the memory."""
    cfg = FinetuneConfig(
        dataset="d", out="o", model="m", resolution=resolution, batch_size=batch, lora_rank=rank, **flags
    )
    seen = []
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: seen.append(device) or free)
    with memory_cap(2**30):
        try:
            bounds.check_finetune(cfg, components, [1] * images, torch.device("cpu"), train_text=False)
        except UsageError as e:
            assert any(w in one_line(e) for w in ("--resolution", "--lora-rank", "caching", "epoch")), str(e)
            return
    assert rank <= 32, "a rank past the smallest adapted layer (32 features) was let through"
    if free is not None:
        vae, unet = components.vae.config, components.unet.config
        nbytes = 4 if cfg.mixed_precision == "no" else 2
        need = bounds.step_bytes(unet, vae, min(batch, images), resolution, nbytes, cfg.gradient_checkpointing, 1)
        assert need <= free or not cfg.cache


# --- dataset contents ---------------------------------------------------------------------------


def png_bytes(size=(16, 16), color="red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


GOOD = png_bytes()
NAMES = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_").lstrip(b"."))
IMAGE = st.one_of(
    st.just(GOOD),
    st.integers(0, len(GOOD) - 1).map(lambda n: GOOD[:n]),  # truncated
    st.binary(max_size=64),
    st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 32),
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ROW = st.one_of(
    st.fixed_dictionaries({"file_name": st.text(max_size=10), "text": st.text(max_size=20)}).map(json.dumps),
    JSONISH.map(json.dumps),
    st.integers(1, 5000).map(lambda d: '{"file_name": "a.png", "text": "x", "d": ' + "[" * d + "]" * d + "}"),
    st.fixed_dictionaries(  # train-clip's alternative captions
        {
            "file_name": st.sampled_from(["x.png", "a.png"]) | st.text(max_size=10),
            "text": st.text(max_size=20),
            "alt_texts": JSONISH | st.lists(st.text(max_size=5), max_size=70) | st.just(["x" * 65_537]),
        }
    ).map(json.dumps),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
METADATA = st.one_of(
    st.lists(ROW, max_size=4).map(lambda rows: "\n".join(rows).encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: ("file_name,text\n" + t).encode("utf-8", "surrogatepass")),
)
SPECIAL = st.sampled_from(["fifo", "folder", "symlink-out", "broken-link", None])


def make_special(path: Path, kind: str, outside: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink-out":
        os.symlink(outside, path)
    elif kind == "broken-link":
        os.symlink(path.parent / "nowhere", path)


@settings(FUZZ, max_examples=80)
@given(
    files=st.lists(st.tuples(NAMES, IMAGE, st.none() | st.binary(max_size=80)), min_size=1, max_size=4),
    meta=st.none() | st.tuples(st.sampled_from(["metadata.jsonl", "metadata.csv"]), METADATA),
    special=st.tuples(SPECIAL, st.sampled_from(["x.png", "x.txt", "metadata.jsonl", "metadata.csv"])),
)
def test_dataset_contents(tmp_path_factory, files, meta, special):
    root = tmp_path_factory.mktemp("fuzz") / "ds"
    root.mkdir()
    outside = root.parent / "outside.png"
    outside.write_bytes(GOOD)
    for stem, image, caption in files:
        (root / os.fsdecode(stem + b".png")).write_bytes(image)
        if caption is not None:
            (root / os.fsdecode(stem + b".txt")).write_bytes(caption)
    if meta is not None:
        (root / meta[0]).write_bytes(meta[1])
    if special[0] is not None and not os.path.lexists(root / special[1]):
        make_special(root / special[1], special[0], outside)
    with memory_cap(2**30):
        try:
            scan = scan_dataset(root, 64, missing_captions="empty", report_dir=root.parent / "out")
        except UsageError as e:
            if "listed in" in one_line(e):  # none usable: the line names the file listing them all
                assert len((root.parent / "out" / "skipped.txt").read_bytes().splitlines()) >= 1
            return
        written = scan.write_skipped(root.parent / "out").read_bytes().decode("utf-8")
    assert len(written.splitlines()) == len(scan.skipped)
    assert all(r.path.is_file() and r.width == 16 for r in scan.records)
    assert all(len(r.alt_captions) <= 64 and all(type(a) is str for a in r.alt_captions) for r in scan.records)
    shutil.rmtree(root.parent)


# --- damaged run files ---------------------------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(
    st.one_of(
        st.binary(max_size=300),
        JSONISH.map(json.dumps).map(str.encode),
        st.integers(1, 3000).map(lambda d: ("[" * d + "]" * d).encode()),
        st.integers(1, 6000).map(lambda n: b'{"step": ' + b"9" * n + b', "files": {}}'),
    )
)
def test_damaged_manifests_are_incomplete_checkpoints(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("ck") / "checkpoints" / "step-00000001"
    folder.mkdir(parents=True)
    (folder / ckpt.MANIFEST).write_bytes(content)
    with memory_cap(2**30):
        try:
            manifest = ckpt.read_manifest(folder)
        except UsageError as e:
            one_line(e)
            assert not ckpt.is_complete(folder)
            return
    assert manifest["step"] == 1 and isinstance(manifest["files"], dict)


@settings(FUZZ, max_examples=100)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.integers(1, 3000).map(lambda d: ("a: " + "[" * d + "]" * d).encode()),
        st.integers(1, 200).map(lambda d: "".join(f"{'  ' * i}k{i}:\n" for i in range(d)).encode()),
    )
)
def test_damaged_recipes_are_one_line(tmp_path_factory, content):
    out = tmp_path_factory.mktemp("run")
    (out / "config.yaml").write_bytes(content)
    with memory_cap(2**30):
        try:
            assert isinstance(saved_recipe(out), dict)
        except UsageError as e:
            one_line(e)
