"""A model whose latentdiff.json names an upscaler inside its folder runs the cascade by default:
generate gives the upscaled image, --no-upscale (upscale=False) the base image, and the record says
which; the upscaler's own latentdiff.json sets its steps, guidance and noise level."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from latentdiff import Pipeline
from latentdiff.cli.main import main


@pytest.fixture(scope="module")
def cascade(tiny_sd1, tmp_path_factory):
    from latentdiff.models.testing import make_tiny_upscaler

    root = tmp_path_factory.mktemp("cascade") / "model"
    shutil.copytree(tiny_sd1, root)
    up = make_tiny_upscaler(root / "upscaler")
    (up / "latentdiff.json").write_text(json.dumps({"steps": 2, "guidance": 1.0, "noise_level": 30}))
    (root / "latentdiff.json").write_text(json.dumps({"steps": 2, "upscaler": "upscaler"}))
    return root


def _pipe(model):
    p = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
    p.progress = False
    return p


def test_the_models_upscaler_runs_unless_turned_off(cascade, tiny_sd1):
    pipe = _pipe(cascade)
    big = pipe("a red apple", seed=3)[0]
    base = pipe("a red apple", seed=3, upscale=False)[0]
    plain = _pipe(tiny_sd1)("a red apple", seed=3, steps=2)[0]
    assert base.size == plain.size and np.array_equal(np.asarray(base), np.asarray(plain))
    assert big.size == (4 * base.width, 4 * base.height)
    info = big.info["latentdiff"]
    assert info["upscaler"] == str((cascade / "upscaler").resolve()) and info["upscaled_size"] == list(big.size)
    assert base.info["latentdiff"]["upscale"] is False and "upscaler" not in base.info["latentdiff"]
    # the same as naming the upscaler by hand, whose latentdiff.json gives 2 steps, guidance 1, noise 30
    by_hand = pipe.upscale(base, prompt="a red apple", seed=3, upscaler=str(cascade / "upscaler"))
    assert by_hand.info["latentdiff"]["noise_level"] == 30 and by_hand.info["latentdiff"]["steps"] == 2
    assert np.array_equal(np.asarray(big), np.asarray(by_hand))


def test_cli_no_upscale_and_from(cascade, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["generate", "a red apple", "--model", str(cascade), "--out", str(out), "--quiet"]) == 0
    assert main(["generate", "a red apple", "--model", str(cascade), "--out", str(out), "--quiet", "--no-upscale"]) == 0
    big, small = sorted(out.glob("*.png"))
    assert Image.open(big).size == (256, 256) and Image.open(small).size == (64, 64)
    capsys.readouterr()
    assert main(["generate", "--from", str(small), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = next((tmp_path / "again").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(small)))
    capsys.readouterr()
    code = main(
        [
            "generate",
            "x",
            "--model",
            str(cascade),
            "--out",
            str(tmp_path / "bad"),
            "--quiet",
            "--no-upscale",
            "--upscaler",
            str(cascade / "upscaler"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "contradict" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name, says", [("../elsewhere", "outside"), ("missing", "not a folder")])
def test_a_bad_upscaler_entry_is_one_line(cascade, tmp_path, capsys, name, says):
    model = tmp_path / "m"
    shutil.copytree(cascade, model, ignore=shutil.ignore_patterns("upscaler"))
    (model / "latentdiff.json").write_text(json.dumps({"steps": 2, "upscaler": name}))
    code = main(["generate", "x", "--model", str(model), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and says in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "x", "--model", str(model), "--out", str(tmp_path / "o"), "--quiet", "--no-upscale"]) == 0
