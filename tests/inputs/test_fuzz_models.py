"""Issue 24's fuzzing of model files (hypothesis, derandomized), each case inside a memory cap so a
blow-up fails the test instead of the machine. Every case ends in images or in one line: a
UsageError / ModelError / LatentDiffError, exit 2 / 1 on the command line.

Families: special, truncated and oversized files, deep nesting and a wrong type for any key of any
config in a model folder (model_index.json, config.json, ...); a wrong type for any key of a single
file's metadata; safetensors headers built field by field (as weights, LoRA, embedding or VAE);
embedding files (shapes, dtypes, values, layouts); LoRA files (a valid kohya file, damaged). The
Python API's arguments are fuzzed in test_fuzz_api.py; flags, --from and random JSON configs in
test_fuzz.py."""

import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from helpers import memory_cap, one_line_or
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import assert_clean, run_main

from latentdiff import Pipeline
from latentdiff.runtime.reading import MAX_CONFIG_BYTES, MAX_DEPTH

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _bounded_memory():
    """A fixed 2 GiB "available" (so the estimates, not the machine, decide) and a 3 GiB cap on
    what the process may allocate beyond what it holds."""
    with mock.patch("latentdiff.runtime.memory.available_bytes", lambda device: 2 * 2**30), memory_cap(3 * 2**30):
        yield


# ---- model files --------------------------------------------------------------------------------------

CONFIGS = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "scheduler/scheduler_config.json",
    "latentdiff.json",
]
FILES = [
    *CONFIGS,
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
]
WRONG_TYPES = st.sampled_from(
    [
        None,
        True,
        False,
        "1",
        "0.18215",
        "",
        "nan",
        [],
        [1],
        ["a"],
        [[1]],
        {},
        {"a": 1},
        1.5,
        0,
        -1,
        2**31,
        10**15,
        math.nan,
        math.inf,
    ]
)


def copy_model(src: Path, dst: Path) -> Path:
    """Weights hard-linked (cheap): a case that changes a weights file must unlink it first."""
    shutil.copytree(
        src, dst, copy_function=lambda s, d: os.link(s, d) if s.endswith(".safetensors") else shutil.copy2(s, d)
    )
    return dst


def _damage(path: Path, how: str, data) -> bool:
    """Damage `path` as `how` says; True where the result must be refused."""
    content = path.read_bytes() if path.is_file() else b""
    path.unlink(missing_ok=True)
    if how == "fifo":
        os.mkfifo(path)
    elif how == "device":
        os.symlink("/dev/zero", path)
    elif how == "folder":
        path.mkdir()
    elif how == "truncated":
        path.write_bytes(content[: data.draw(st.integers(0, max(len(content) - 1, 0)), label="cut")])
        return False  # a config cut after its closing brace is still whole
    elif how == "oversized" and path.suffix == ".safetensors":  # a header past the file or the header limit
        n = data.draw(st.sampled_from([len(content), 17 * 2**20, 99_000_000, 2**40, 2**64 - 1]), label="n")
        path.write_bytes(struct.pack("<Q", n) + content[8:])
    elif how == "oversized":
        path.write_bytes(content.rstrip()[:-1] + b', "pad": "' + b"x" * MAX_CONFIG_BYTES + b'"}')
    else:  # deep
        depth = data.draw(st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH + 1, 10_000]), label="depth")
        path.write_text(content.decode().rstrip()[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")
        return depth > MAX_DEPTH - 1  # the object around the key adds a level
    return True


@settings(FUZZ, max_examples=40)
@given(
    data=st.data(),
    file=st.sampled_from(FILES),
    how=st.sampled_from(["fifo", "device", "folder", "truncated", "oversized", "deep", "type"]),
)
def test_fuzz_model_files_special_truncated_oversized_deep_and_mistyped(tiny_sd1, data, file, how):
    if how in ("deep", "type") and not file.endswith(".json") or file.startswith("tokenizer") and how == "type":
        how = "truncated"
    generate_from_damaged(tiny_sd1, data, file, how)


PIXEL_FILES = ["model_index.json", "unet/config.json", "scheduler/scheduler_config.json", "latentdiff.json",
               "unet/diffusion_pytorch_model.safetensors", "text_encoder/config.json"]  # fmt: skip


@pytest.fixture(scope="module")
def pixel_base(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    return make_tiny(tmp_path_factory.mktemp("pixel") / "base", "if-base", seed=0, defaults={"steps": 1})


@settings(FUZZ, max_examples=12)
@given(data=st.data(), file=st.sampled_from(PIXEL_FILES), how=st.sampled_from(["fifo", "truncated", "deep", "type"]))
def test_fuzz_pixel_base_files(pixel_base, data, file, how):
    """A pixel base folder (IF stage I layout, no vae/) as --model, damaged as above."""
    if how in ("deep", "type") and not file.endswith(".json"):
        how = "truncated"
    generate_from_damaged(pixel_base, data, file, how)


def generate_from_damaged(model_dir: Path, data, file: str, how: str) -> None:
    """`generate` from a copy of `model_dir` whose `file` is damaged as `how` says (or given a wrong
    type for one key): images or one line, and an exit code that is not 0 where it must be refused."""
    with tempfile.TemporaryDirectory() as tmp:
        model = copy_model(model_dir, Path(tmp) / "m")
        path = model / file
        refused = False
        if how == "type":
            config = json.loads(path.read_text()) if path.is_file() else {}
            key = data.draw(st.sampled_from(sorted(config) or ["steps"]), label="key")
            path.write_text(json.dumps({**config, key: data.draw(WRONG_TYPES, label="value")}))
        else:
            refused = _damage(path, how, data)
        out = Path(tmp) / "o"
        argv = ["generate", "x", "--model", str(model), "--steps", "1", "--width", "16", "--height", "16"]
        code, stdout, err = run_main([*argv, "--quiet", "--device", "cpu", "--out", str(out)])
        assert_clean(code, stdout, err, out)
        assert code != 0 or not refused, (how, file)


@pytest.fixture(scope="module")
def single_file(tiny_sd1, tmp_path_factory):
    from safetensors import safe_open

    from latentdiff.formats.convert import convert

    f = convert(tiny_sd1, tmp_path_factory.mktemp("single") / "tiny.safetensors")
    with safe_open(str(f), "pt") as s:
        return {k: s.get_tensor(k) for k in s.keys()}, s.metadata()


@settings(FUZZ, max_examples=25)
@given(
    data=st.data(),
    part=st.sampled_from(["unet", "vae", "scheduler", "text_encoder", "defaults", "index", "tokenizers", "family"]),
)
def test_fuzz_single_file_metadata_types(single_file, data, part):
    from safetensors.torch import save_file

    tensors, meta = single_file
    own = json.loads(meta["latentdiff"])
    if isinstance(own.get(part), dict) and own[part] and data.draw(st.booleans(), label="one key"):
        key = data.draw(st.sampled_from(sorted(own[part])), label="key")
        own[part] = {**own[part], key: data.draw(WRONG_TYPES, label="value")}
    else:
        own[part] = data.draw(WRONG_TYPES, label="value")
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "m.safetensors"
        save_file(tensors, f, metadata={**meta, "latentdiff": json.dumps(own)})
        pipe = one_line_or(lambda: Pipeline.from_pretrained(f, device="cpu"))
        if pipe is not None:
            pipe.progress = False
            one_line_or(lambda: pipe("x", steps=1, width=16, height=16))


def loads_and_runs(prompt: str = "x", **kwargs) -> bool:
    """Load (and, where that works, run one tiny step): True for images, False after one line."""
    pipe = one_line_or(lambda: Pipeline.from_pretrained(device="cpu", **kwargs))
    if pipe is None:
        return False
    pipe.progress = False
    return one_line_or(lambda: pipe(prompt, steps=1, width=16, height=16)) is not None


# ---- safetensors headers ------------------------------------------------------------------------------

DTYPES = st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "f32", "X"]) | WRONG_TYPES
DIMS = st.sampled_from([0, 1, 2, 4, 32, 2**31, 2**63, -1, 1.0, True])
NAMES = st.sampled_from(["t", "emb_params", "lora_unet_x.lora_down.weight", "", "é\0", "__metadata__"])


@st.composite
def safetensors_bytes(draw) -> bytes:
    """A safetensors file built field by field: each field valid, or a wrong type, or out of range."""
    header, offset = {}, 0
    for i in range(draw(st.integers(0, 3), label="tensors")):
        size = draw(st.sampled_from([0, 4, 16, 128]), label="size")
        entry = {
            "dtype": draw(DTYPES, label="dtype"),
            "shape": draw(st.lists(DIMS, max_size=3) | WRONG_TYPES, label="shape"),
            "data_offsets": draw(
                st.just([offset, offset + size]) | st.sampled_from([[0], [8, 0], [0, 2**64], [-1, 4], "0,4"]),
                label="offsets",
            ),
        }
        header[draw(NAMES, label="name") + str(i)] = draw(st.just(entry) | WRONG_TYPES, label="entry")
        offset += size
    if draw(st.booleans(), label="metadata"):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4)) | WRONG_TYPES)
    text = json.dumps(header).encode()  # NaN and Infinity come out as bare words: not JSON
    text += b" " * draw(st.sampled_from([0, 0, 3, 8]), label="padding")
    declared = len(text) + draw(st.sampled_from([0, 0, 0, -1, 1, 8, 2**32, 2**64 - 1 - len(text)]), label="delta")
    body = b"\x7f" * max(offset + draw(st.sampled_from([0, 0, -1, 3]), label="extra"), 0)
    whole = struct.pack("<Q", max(declared, 0)) + text + body
    return whole[: draw(st.sampled_from([len(whole), len(whole), 0, 4, 8, 12]), label="cut")]


@settings(FUZZ, max_examples=50)
@given(raw=safetensors_bytes(), use=st.sampled_from(["weights", "unet", "lora", "embedding", "vae"]))
def test_fuzz_safetensors_headers(tiny_sd1, raw, use):
    from latentdiff.models.weights import load_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "x.safetensors"
        f.write_bytes(raw)
        if use == "weights":
            one_line_or(lambda: load_state_dict(f))
        elif use == "unet":
            model = copy_model(tiny_sd1, Path(tmp) / "m")
            shutil.move(f, model / "unet/diffusion_pytorch_model.safetensors")  # replaces the hard link
            loads_and_runs(model=model)
        else:
            loads_and_runs("x <x>", model=tiny_sd1, **{"vae": str(f)} if use == "vae" else {use + "s": [str(f)]})


# ---- embedding files ----------------------------------------------------------------------------------


@st.composite
def tensors(draw, dims=(0, 1, 2, 3, 32, 33), max_dims=3):
    import torch

    shape = draw(st.lists(st.sampled_from(dims), max_size=max_dims), label="shape")
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64", "int64", "bool"]), label="dtype")
    fill = draw(st.sampled_from(["randn", "randn", 0.0, math.nan, math.inf, -math.inf, 1e30]), label="fill")
    t = torch.randn(shape, generator=torch.Generator().manual_seed(0)) if fill == "randn" else torch.full(shape, fill)
    return t.to(getattr(torch, dtype))


@st.composite
def embedding_file(draw, folder: Path) -> tuple[Path, bool]:
    """An embedding in one of the layouts read (or a broken one), in safetensors or torch's pickle,
    and whether it must load: A1111's emb_params of finite floats, 32 wide, as the tiny model."""
    t = tensors()
    layout = draw(st.sampled_from(["emb_params", "a1111_pt", "clip", "token", "several", "pt_odd"]), label="layout")
    if layout == "emb_params":
        content = {"emb_params": draw(t)}
    elif layout == "a1111_pt":
        content = {"string_to_param": draw(st.fixed_dictionaries({"*": t}) | WRONG_TYPES), "name": "x"}
    elif layout == "clip":
        content = draw(st.dictionaries(st.sampled_from(["clip_l", "clip_g", "clip_x"]), t, min_size=1))
    elif layout == "token":
        content = {"<x>": draw(t)}
    elif layout == "several":
        content = draw(st.dictionaries(st.sampled_from(["a", "b", "emb_params", "clip_l"]), t, min_size=2))
    else:  # not a dict of tensors at all
        content = draw(WRONG_TYPES | st.lists(t, max_size=2) | t)
    pickled = layout in ("a1111_pt", "pt_odd") or draw(st.booleans(), label="pickled")
    path = folder / ("x.pt" if pickled else "x.safetensors")
    if pickled:
        import torch

        torch.save(content, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in content.items()}, path)
    v = content.get("emb_params") if layout == "emb_params" else None
    good = v is not None and v.is_floating_point() and 1 <= v.dim() <= 2 and v.shape[-1] == 32 and v.numel() > 0
    return path, good and bool(v.isfinite().all())


@settings(FUZZ, max_examples=40)
@given(data=st.data(), token=st.sampled_from(["", ":x", ":tok", ":<a>"]))
def test_fuzz_embedding_files(tiny_sd1, data, token):
    with tempfile.TemporaryDirectory() as tmp:
        f, good = data.draw(embedding_file(Path(tmp)), label="file")
        ran = loads_and_runs("a x tok <a> b", model=tiny_sd1, embeddings=[f"{f}{token}"])
        assert ran or not good or token == ":<a>", f  # "<a>" is no word a prompt can hold


# ---- LoRA files ---------------------------------------------------------------------------------------

UNET_LAYER = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
TE_LAYER = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


def kohya_lora() -> dict:
    """A valid kohya LoRA for the tiny SD 1.x model (rank 4, alpha 2, 32 wide layers)."""
    import torch

    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in (UNET_LAYER, UNET_LAYER[:-2] + "out_0", TE_LAYER, TE_LAYER[:-6] + "out_proj"):
        out |= {f"{layer}.lora_down.weight": torch.randn(4, 32, generator=g), f"{layer}.alpha": torch.tensor(2.0)}
        out[f"{layer}.lora_up.weight"] = torch.randn(32, 4, generator=g) * 0.1
    return out


@settings(FUZZ, max_examples=30)
@given(
    data=st.data(),
    damage=st.lists(st.sampled_from(["drop", "replace", "rename", "junk", "peft"]), max_size=3),
    scale=st.sampled_from(["", ":0", ":1", ":-2.5", ":100"]),
)
def test_fuzz_lora_files(tiny_sd1, data, damage, scale):
    from safetensors.torch import save_file

    lora = kohya_lora()
    for how in damage:
        key = data.draw(st.sampled_from(sorted(lora)), label="key") if lora else "k"
        if how == "drop":
            lora.pop(key, None)
        elif how == "replace":
            lora[key] = data.draw(tensors(dims=(0, 1, 4, 32, 33), max_dims=4), label="tensor")
        elif how == "rename":
            lora[data.draw(st.sampled_from(["lora_unet_nowhere.alpha", key + "x", key.upper(), "."]))] = lora.pop(key)
        elif how == "junk":
            lora[data.draw(st.text(min_size=1, max_size=8), label="junk key")] = lora[key].clone()
        else:  # diffusers / peft names for the same tensors
            lora = {k.replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v for k, v in lora.items()}
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "x.safetensors"
        save_file({k: v.contiguous() for k, v in lora.items()}, f)
        assert loads_and_runs(model=tiny_sd1, loras=[f"{f}{scale}"]) or damage
