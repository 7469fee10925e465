"""eval-emoji --cascade (issue 14's measure of the super-resolution stage): PSNR/SSIM of the cascade's
upscale and of a bicubic upscale of the same base image against the true high-resolution render, and
top-1 of the base and the cascade; on a tiny model with a tiny 4x upscaler inside it."""

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from latentdiff import Pipeline
from latentdiff.cli.main import main
from latentdiff.training.emoji.cascade_eval import evaluate_cascade, psnr, ssim

COLORS = ["red", "green", "blue", "white"]  # white and blue are held out


def _dataset(root, size):
    (root / "images").mkdir(parents=True)
    rows = []
    for i, c in enumerate(COLORS):
        Image.new("RGB", (size, size), c).save(root / f"images/{i}.png")
        rows.append({"file_name": f"images/{i}.png", "text": f"{c} square", "split": "heldout" if i >= 2 else "train"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.fixture(scope="module")
def cascade(tiny_sd1, tmp_path_factory):
    from latentdiff.models.testing import make_tiny_upscaler

    root = tmp_path_factory.mktemp("cascade-eval") / "model"
    shutil.copytree(tiny_sd1, root)
    (make_tiny_upscaler(root / "up") / "latentdiff.json").write_text(json.dumps({"steps": 2, "guidance": 1.0}))
    (root / "latentdiff.json").write_text(json.dumps({"steps": 2, "upscaler": "up"}))
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade-sets")
    return _dataset(root / "low", 64), _dataset(root / "high", 256)


def test_psnr_and_ssim_by_hand():
    a = np.zeros((32, 32, 3), np.uint8)
    assert psnr(a, a) == float("inf") and psnr(a, a + 1) == pytest.approx(10 * np.log10(255**2), abs=1e-9)
    noisy = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(noisy, noisy) == pytest.approx(1.0) and ssim(noisy, 255 - noisy) < 0.0


def test_scores_are_those_of_the_images_generate_makes(cascade, sets):
    low, high = sets
    pipe = Pipeline.from_pretrained(cascade, device="cpu", dtype="fp32")
    pipe.progress = False
    res = evaluate_cascade(pipe, low, high, seeds=(0, 3), batch=1)
    assert (res["n"], res["seeds"], res["upscaler"]) == (2, [0, 3], str((cascade / "up").resolve()))
    assert 0.0 <= res["top1_base"] <= 1.0 and 0.0 <= res["top1_cascade"] <= 1.0
    # by hand: generate's cascade output and a bicubic upscale of its base image, vs the true 256 px render
    scores = {"cascade": [], "bicubic": []}
    for seed in (0, 3):
        for i in (2, 3):
            true = np.asarray(Image.open(high / f"images/{i}.png"))
            big = pipe(f"{COLORS[i]} square", seed=seed)[0]
            base = pipe(f"{COLORS[i]} square", seed=seed, upscale=False)[0]
            for name, im in (("cascade", big), ("bicubic", base.resize(big.size, Image.BICUBIC))):
                scores[name].append((psnr(np.asarray(im), true), ssim(np.asarray(im), true)))
    for name, pairs in scores.items():
        assert res[name]["psnr"] == pytest.approx(np.mean([p for p, _ in pairs]), rel=1e-9)
        assert res[name]["ssim"] == pytest.approx(np.mean([s for _, s in pairs]), rel=1e-9)


def test_cli_writes_json_and_refuses_what_it_cannot_score(cascade, sets, tiny_sd1, tmp_path, capsys):
    low, high = sets
    out = tmp_path / "c.json"
    done = run_cli("eval-emoji", low, "--model", cascade, "--cascade", high, "--seeds", "1", "--out", out)
    assert done.returncode == 0, done.stderr
    res = json.loads(out.read_text())
    assert set(res) >= {"cascade", "bicubic", "top1_base", "top1_cascade"} and res["seeds"] == [1]
    other = _dataset(tmp_path / "other", 256)
    (other / "metadata.jsonl").write_text((other / "metadata.jsonl").read_text().replace("red square", "pink square"))
    small = _dataset(tmp_path / "small", 128)
    for args, says in [
        ((low, "--model", tiny_sd1, "--cascade", high), "names no upscaler"),
        ((low, "--model", cascade, "--cascade", other), "same names"),
        ((low, "--model", cascade, "--cascade", small), "build it at the cascade's size"),
        ((low, "--model", cascade, "--cascade", tmp_path), "no metadata.jsonl"),
        ((low, "--upscaler", cascade / "up"), "--upscaler goes with --cascade"),
    ]:
        code = main(["eval-emoji", *map(str, args), "--seeds", "0"])  # in-process: five model loads are slow
        err = capsys.readouterr().err
        # besides the loading line and the progress bar (issue 22), one line
        said = [x for x in err.splitlines() if x.strip() and not x.startswith(("latentdiff: loading", "eval-emoji"))]
        assert code == 2 and says in err and len(said) == 1 and "Traceback" not in err, (args, err)
