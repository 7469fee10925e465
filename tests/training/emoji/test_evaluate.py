"""eval-emoji's measure: nearest-reference ranks (hand-computed cases) and results per generation
seed, averaged, with per-group top-1, on a tiny dataset and model."""

import json

import numpy as np
import pytest
from PIL import Image

from latentdiff.cli.main import main
from latentdiff.training.emoji.evaluate import evaluate, ranks, table

COLORS = {"red": "Food", "green": "Flags", "blue": "Flags", "yellow": "Symbols", "white": "Symbols"}


def test_ranks_count_only_strictly_closer_references():
    refs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    generated = np.array([[0.9, 0.0], [0.9, 0.0], [0.0, 2.0]])
    # image 0 is nearest its own reference 1 (the identical ref 2 ties, not counted); image 1 asked for
    # ref 0, but refs 1 and 2 are closer; image 2 asked for ref 3 (distance 1), ref 0 is at 4: rank 0
    assert ranks(generated, [1, 0, 3], refs).tolist() == [0, 2, 0]


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i, (c, group) in enumerate(COLORS.items()):
        Image.new("RGB", (64, 64), c).save(tmp_path / f"images/{i}.png")
        rows.append(
            {
                "file_name": f"images/{i}.png",
                "text": f"{c} square",
                "group": group,
                "split": "heldout" if c == "white" else "train",
            }
        )
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path


def test_results_per_seed_and_averaged(pipe_sd1, dataset):
    res = evaluate(pipe_sd1, dataset, [1.0], steps=2, n_train=3, seeds=(0, 5), batch=2)
    train, held = res["train@g1"], res["heldout@g1"]
    assert (train["n"], held["n"], train["seeds"]) == (3, 1, [0, 5])
    per = [train["per_seed"][s]["top1"] for s in ("0", "5")]
    assert train["top1"] == pytest.approx(np.mean(per)) and all(0 <= t <= 1 for t in per)
    assert set(train["groups"]) <= {"Food", "Flags", "Symbols"} and set(held["groups"]) == {"Symbols"}
    assert list(train["groups"].values()) == sorted(train["groups"].values())  # weakest first
    assert "top-1 s5" in table(res).splitlines()[0] and len(table(res).splitlines()) == 4


def test_n_heldout_draws_that_many_held_out_names(dataset):
    from latentdiff.training.emoji.evaluate import load_rows, pick_prompts

    rows = load_rows(dataset)
    assert len(pick_prompts(rows, 3)["heldout"]) == 1  # all of them by default
    assert pick_prompts(rows, 3, n_heldout=0)["heldout"] == []
    assert pick_prompts(rows, 2, n_heldout=5) == pick_prompts(rows, 2, n_heldout=5)  # a fixed draw


@pytest.mark.parametrize("argv", [["--n-train", "-1"], ["--n-heldout", "-2"]])
def test_negative_counts_are_one_line(dataset, capsys, argv):
    assert main(["eval-emoji", str(dataset), *argv]) == 2
    err = capsys.readouterr().err
    assert "count >= 0" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("seeds", ["", "a,1", "-1"])
def test_bad_seeds_are_one_line(dataset, capsys, seeds):
    assert main(["eval-emoji", str(dataset), "--seeds", seeds]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and len(err.strip().splitlines()) == 1


def test_grid_draws_each_name_at_the_same_seed(tiny_sd1, dataset, tmp_path):
    from latentdiff import Pipeline

    out = tmp_path / "grid.png"
    names = ["red square", "blue square"]
    assert (
        main(
            [
                "eval-emoji",
                str(dataset),
                "--model",
                str(tiny_sd1),
                "--grid",
                str(out),
                "--grid-names",
                "; ".join(names),
                "--grid-only",
            ]
        )
        == 0
    )
    pipe = Pipeline.from_pretrained(tiny_sd1)
    pipe.progress = False
    sheet = np.asarray(Image.open(out).convert("RGB"), dtype=int)
    for k, name in enumerate(names):  # what `generate NAME` gives, at seed 0 for every name
        alone = np.asarray(pipe(name, seed=0)[0].resize((128, 128), Image.NEAREST), dtype=int)
        assert np.abs(sheet[:128, 128 * k : 128 * (k + 1)] - alone).max() <= 1, name


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--grid-only"], "--grid PNG"),
        (["--grid", "g.png", "--grid-names", " ; "], "got none"),
        (["--grid", "g.png", "--grid-names", "red square;green circle"], "green circle"),
    ],
)
def test_bad_grid_options_are_one_line(dataset, capsys, argv, says):
    assert main(["eval-emoji", str(dataset), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
