"""eval-emoji --prior (issue 28's measure of the DALL-E 2 path): the prior's cosine between predicted and
true CLIP image embeddings on held-out names with its retrieval top-1 and two baselines, and with --model
a decoder's top-1 through the prior; on a tiny prior and a tiny Stable unCLIP decoder."""

import json

import pytest
import torch
from PIL import Image

from latentdiff.cli.main import main
from latentdiff.training.emoji.prior_eval import embedding_scores, run_prior

COLORS = ["red", "green", "blue", "white"]  # blue and white are held out


@pytest.fixture(scope="module")
def emoji_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior-eval")
    rows = []
    for i, c in enumerate(COLORS):
        Image.new("RGB", (32, 32), c).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"{c} square", "split": "heldout" if i >= 2 else "train"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_prior

    return make_tiny_prior(tmp_path_factory.mktemp("models") / "prior", seed=5)


def test_scores_by_hand():
    true = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    gallery = torch.cat([true, torch.tensor([[0.6, 0.8]])])
    got = embedding_scores(torch.tensor([[1.0, 0.0], [0.8, 0.6]]), true, gallery)
    assert got["cosine"] == pytest.approx(0.8) and got["cosine_min"] == pytest.approx(0.6)
    assert got["top1_heldout"] == 0.5 and got["top1_all"] == 0.5  # row 2 is nearest row 1's truth, then the extra


def test_cosine_is_that_of_the_prior_generate_samples(emoji_set, prior, tmp_path):
    from latentdiff.families.unclip import encode_pictures, prior_embeddings
    from latentdiff.training.emoji.prior_eval import load_scored_prior

    out = tmp_path / "p.json"
    res = run_prior(str(emoji_set), str(prior), prior_steps=2, prior_guidance=3.0, seeds=(4,), out=str(out))
    assert json.loads(out.read_text()) == res
    got = res["prior"]
    assert got["n"] == 2 and got["gallery"] == 4 and set(got) >= {"text_embedding_baseline", "mean_embedding_baseline"}
    parts, encoder, processor = load_scored_prior(str(prior))
    names = ["blue square", "white square"]
    pred = prior_embeddings(parts, names, 2, 3.0, [torch.Generator().manual_seed(4 + k) for k in range(2)], True)
    true = encode_pictures(encoder, processor, [Image.open(emoji_set / f"{i}.png") for i in (2, 3)])
    want = torch.nn.functional.cosine_similarity(pred, true).mean()
    assert got["prior"]["cosine"] == pytest.approx(float(want), abs=1e-5)
    assert got["per_seed"]["4"]["cosine"] == got["prior"]["cosine"]


def test_a_decoder_is_scored_through_the_prior(emoji_set, prior, tiny_unclip, tmp_path):
    res = run_prior(str(emoji_set), str(prior), str(tiny_unclip), steps=2, prior_steps=2, seeds=(0,), n_train=1)
    held = [v for k, v in res["images"].items() if k.startswith("heldout")]
    assert held and all(v["n"] == 2 and 0 <= v["top1"] <= 1 for v in held)
    from latentdiff import Pipeline
    from latentdiff.training.emoji.prior_eval import _ThroughPrior

    through = _ThroughPrior(Pipeline.from_pretrained(tiny_unclip), prior=str(prior), prior_steps=2)
    assert through("blue square", steps=2, seed=0)[0].info["latentdiff"]["prior"] == str(prior)  # drawn through it


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--prior-steps", "3"], "go with --prior"),
        (["--prior", "{prior}", "--grid", "g.png"], "drop --grid"),
        (["--prior", "{prior}", "--prior-steps", "1"], "--prior-steps must be from 2"),
        (["--prior", "{prior}", "--prior-guidance", "nan"], "--prior-guidance must be"),
        (["--prior", "{sd}"], "not a Kandinsky 2.2 prior"),
        (["--prior", "{prior}/prior"], "not a Kandinsky 2.2 prior folder"),
    ],
)
def test_refusals_are_one_line(emoji_set, prior, tiny_sd1, capsys, argv, words):
    argv = [a.format(prior=prior, sd=tiny_sd1) for a in argv]
    assert main(["eval-emoji", str(emoji_set), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
