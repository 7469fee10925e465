"""Helpers shared by test modules in several folders (tests/ is on the path: conftest.py's folder)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file

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


def made_and_replayed(capsys, tmp_path, *argv) -> tuple[dict, dict]:
    """Generate with `argv`, check `--from` on the result gives the same pixels; return the
    image's latentdiff parameters and its A1111 fields."""
    (made,) = generate(capsys, *argv, "--out", tmp_path / "made", "--steps", 2)
    (again,) = generate(capsys, "--from", made, "--out", tmp_path / "again")
    assert np.array_equal(pixels(again), pixels(made))
    with Image.open(made) as im:
        return meta(made), parse_infotext(im.text["parameters"])[2]
