"""Helpers shared by test modules in several folders (tests/ is on the path: conftest.py's folder)."""

import contextlib
import io
import json
import resource
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from latentdiff import Pipeline
from latentdiff.cli.main import main
from latentdiff.images.infotext import parse_infotext
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.config import FinetuneConfig


def cfg(dataset, model, out, **kw):
    base = dict(
        dataset=str(dataset),
        model=str(model),
        out=str(out),
        max_steps=4,
        batch_size=2,
        resolution=64,
        lr=1e-3,
        checkpoint_every=2,
        keep_checkpoints=2,
        log_every=1,
        seed=1,
    )
    return FinetuneConfig(**{**base, **kw})


def weights(out):
    return load_file(str(ckpt.latest_checkpoint(out) / "trainable.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def killed_after_first_checkpoint(run, monkeypatch) -> None:
    """`run()` (a finetune) as a process killed right after it writes its first checkpoint."""
    real_save = ckpt.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)


def noise_image(size=(64, 64), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def paired(models: dict, ref_class: str, **ref_kwargs) -> dict:
    """kind -> (our fp32 CPU pipeline, diffusers' `ref_class` pipeline) on the same weights. `ref_kwargs`
    go to its from_pretrained (default: no safety checker; SDXL classes take add_watermarker=False)."""
    import diffusers

    ref_kwargs = ref_kwargs or {"safety_checker": None, "requires_safety_checker": False}
    out = {}
    for kind, path in models.items():
        ours = Pipeline.from_pretrained(path, device="cpu", dtype="fp32")
        ours.progress = False
        ref = getattr(diffusers, ref_class).from_pretrained(path, **ref_kwargs)
        ref.set_progress_bar_config(disable=True)
        out[kind] = (ours, ref)
    return out


def max_pixel_diff(a, b) -> int:
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


def meta(path) -> dict:
    with Image.open(path) as im:
        return json.loads(im.text["latentdiff"])


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def generate(capsys, *argv) -> list[Path]:
    """Run `latentdiff generate` in-process on the CPU; return the paths it printed."""
    code = main(["generate", *map(str, argv), "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [Path(line) for line in out.splitlines()]


def fails(capsys, *argv) -> str:
    """Run a bad `latentdiff generate`; it must exit 2 with one line on stderr. Return that line."""
    code = main(["generate", *map(str, argv), "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("latentdiff: error: ")
    return err.strip()


# Warnings Python's default filters do not print (a user of the console command never sees them).
UNSHOWN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def run_cli_here(*args) -> subprocess.CompletedProcess:
    """`latentdiff ARGS` in this process, for tests of what the command answers (exit code, the one
    line), not of the process: conftest.run_cli's result without a process start (~3 CPU s each).
    A warning a user would see printed is added to stderr as a line, as the process would print it."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as seen, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        warnings.simplefilter("default")
        try:
            code = main([*map(str, args)])
        except SystemExit as e:  # argparse's own refusals
            code = e.code
    shown = "".join(
        f"{w.category.__name__}: {w.message}\n" for w in seen if not issubclass(w.category, UNSHOWN_WARNINGS)
    )
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue() + shown)


def made_and_replayed(capsys, tmp_path, *argv) -> tuple[dict, dict]:
    """Generate with `argv`, check `--from` on the result gives the same pixels; return the
    image's latentdiff parameters and its A1111 fields."""
    (made,) = generate(capsys, *argv, "--out", tmp_path / "made", "--steps", 2)
    (again,) = generate(capsys, "--from", made, "--out", tmp_path / "again")
    assert np.array_equal(pixels(again), pixels(made))
    with Image.open(made) as im:
        return meta(made), parse_infotext(im.text["parameters"])[2]


def _data_bytes() -> int:
    """This process's data segment (VmData: heap and private mappings, what big allocations use)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))


@contextlib.contextmanager
def memory_cap(extra: int = 3 * 2**30):
    """Let the code inside allocate at most `extra` more bytes: an unbounded allocation then fails
    the test (MemoryError, or torch's "can't allocate memory") instead of exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _data_bytes() + extra
    resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def capped(limit: int = 3 * 2**30):
    """A `preexec_fn` for subprocess runs: the child may use at most `limit` bytes of data."""
    return lambda: resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


@contextlib.contextmanager
def small_disk(path: Path, size: str = "256k"):
    """A tmpfs of `size` mounted at `path` (a full disk for the code inside); skips where this
    process may not mount (not root, or a container without the capability)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode(errors='replace').strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def tiny_controlnet(unet, factor: int, seed: int):
    """A ControlNet made from the UNet (as training starts one), its zero convolutions randomised
    so that it changes the picture."""
    import torch
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8,) * factor.bit_length())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "zero_conv" in name or "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.eval()


def save_tiny_controlnet(model_dir, out, seed: int = 1) -> Path:
    """tiny_controlnet for the tiny model in `model_dir`, saved as a diffusers folder `out`."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    vae = json.loads((Path(model_dir) / "vae" / "config.json").read_text())
    tiny_controlnet(unet, 2 ** (len(vae["block_out_channels"]) - 1), seed).save_pretrained(out)
    return Path(out)


def webuiapi_client(webuiapi, served):
    """A webuiapi client of the test server, with webuiapi's shared defaults emptied first: its
    txt2img/img2img take `alwayson_scripts={}` as a default dict that they fill with a call's
    ControlNet units, so every later call of the process sends those units again."""
    for method in (webuiapi.WebUIApi.txt2img, webuiapi.WebUIApi.img2img):
        for default in method.__defaults__ or ():
            if isinstance(default, (dict, list)):
                default.clear()
    # HTTP Basic with the token as password: how A1111 clients authenticate (--api-auth).
    return webuiapi.WebUIApi(host="127.0.0.1", port=served.port, username="me", password=served.token)


# ComfyUI's own API example (script_examples/basic_api_example.py, its default graph), made tiny.
COMFY_GRAPH = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "cfg": 8,
            "denoise": 1,
            "latent_image": ["5", 0],
            "model": ["4", 0],
            "negative": ["7", 0],
            "positive": ["6", 0],
            "sampler_name": "euler",
            "scheduler": "normal",
            "seed": 8566257,
            "steps": 3,
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 2, "height": 64, "width": 64}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red square"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


# A kohya/A1111 LoRA file built from known tensors (tests/formats/test_lora_files.py and others).
UNET_LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
TE_LAYER = "text_model.encoder.layers.0.self_attn.q_proj"
RANK, ALPHA = 4, 2.0


def low_rank(seed: int, out_dim=32, in_dim=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(RANK, in_dim, generator=g) * 0.5, torch.randn(out_dim, RANK, generator=g) * 0.5


def kohya_file(path, seed=0):
    """A kohya/A1111 LoRA: lora_unet_*/lora_te_* names, lora_down/lora_up, alpha (scale alpha/rank)."""
    tensors = {}
    # Real kohya files cover every attention projection; diffusers only recognises the text
    # encoder part when an out projection is among them, so the file has one too.
    layers = (
        ("lora_unet_", UNET_LAYER, seed),
        ("lora_te_", TE_LAYER, seed + 1),
        ("lora_unet_", UNET_LAYER.replace("to_q", "to_out.0"), seed + 2),
        ("lora_te_", TE_LAYER.replace("q_proj", "out_proj"), seed + 3),
    )
    for prefix, layer, s in layers:
        down, up = low_rank(s)
        key = prefix + layer.replace(".", "_")
        tensors.update(
            {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(ALPHA)}
        )
    save_file(tensors, path)
    return path


def one_line_or(fn):
    """fn()'s result, or None after a LatentDiffError of one non-empty line (the fuzz tests)."""
    from latentdiff.errors import LatentDiffError

    try:
        return fn()
    except LatentDiffError as e:
        assert str(e) and "\n" not in str(e), str(e)
        return None


def png_texts(path):
    """(the latentdiff JSON record, the A1111 parameters line) of a PNG we wrote."""
    with Image.open(path) as im:
        return json.loads(im.text["latentdiff"]), im.text["parameters"]


def assert_same_last_checkpoint(run_a, run_b) -> None:
    """The latest checkpoints of two finetune runs hold the same trainable and EMA weights, exactly."""
    from latentdiff.training import checkpoint as ckpt

    for name in ("trainable.safetensors", "ema.safetensors"):
        a = load_file(str(ckpt.latest_checkpoint(run_a) / name))
        b = load_file(str(ckpt.latest_checkpoint(run_b) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
