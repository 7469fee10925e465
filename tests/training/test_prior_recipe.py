"""`finetune --method prior --model recipe.yaml`: a new prior on a train-clip output's CLIP pair
(training/prior_scratch.py) trains, fits its statistics, resumes, and saves a prior folder that
samples; a bad recipe is one line, exit 2."""

import pytest
import torch
from test_train_upscaler import cfg, pictures  # noqa: F401 (the fixture and the run config)

from latentdiff.cli.main import main
from latentdiff.training.loop import finetune


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A stand-in for a train-clip output: the tiny prior's text tower, tokenizer, image tower, processor."""
    from latentdiff.families.unclip_tiny import tiny_kandinsky_prior

    root = tmp_path_factory.mktemp("clip")
    parts = tiny_kandinsky_prior(2)
    parts["text_encoder"].save_pretrained(root / "text_encoder")
    parts["tokenizer"].save_pretrained(str(root / "tokenizer"))
    parts["image_encoder"].save_pretrained(root / "image_encoder")
    parts["image_processor"].save_pretrained(str(root / "feature_extractor"))
    return root


def recipe(root, clip, text=None):
    path = root / "prior.yaml"
    body = f"clip: {clip}\nprior: {{num_layers: 1, num_attention_heads: 2, attention_head_dim: 8}}\n"
    path.write_text(body if text is None else text)
    return path


def test_a_new_prior_trains_fits_statistics_and_samples(pictures, clip_run, tmp_path):  # noqa: F811
    from latentdiff.families.unclip import prior_embeddings
    from latentdiff.models.assemble import load_prior

    model = recipe(tmp_path, clip_run)
    out = finetune(cfg(pictures, model, tmp_path / "run", method="prior", caption_dropout=0.25))
    parts = load_prior(out)
    assert (parts["prior"].clip_std > 0).all() and parts["prior"].config.num_layers == 1
    assert parts["prior_scheduler"]["_class_name"] == "UnCLIPScheduler"
    got = prior_embeddings(parts, ["a red circle"], 2, 4.0, [torch.Generator().manual_seed(1)], True)
    assert got.shape == (1, 32) and torch.isfinite(got).all()
    again = finetune(cfg(pictures, model, tmp_path / "split", method="prior", caption_dropout=0.25, max_steps=1))
    finetune(cfg(pictures, model, again, method="prior", caption_dropout=0.25, resume=True))
    a, b = (load_prior(d)["prior"].state_dict() for d in (out, again))
    assert all(torch.equal(a[k], b[k]) for k in a)  # a new prior is seeded: resume is exact


@pytest.mark.parametrize(
    "text, words",
    [
        ("prior: {{}}", "clip:"),
        ("clip: {missing}", "not a train-clip output"),
        ("clip: {clip}\nprior: {{num_layers: 0}}", "num_layers"),
        ("clip: {clip}\nprior: {{depth: 2}}", "depth"),
        ("clip: {clip}\nscheduler: 3", "scheduler"),
    ],
)
def test_bad_recipes_are_one_line(pictures, clip_run, tmp_path, capsys, text, words):  # noqa: F811
    model = recipe(tmp_path, clip_run, text.format(clip=clip_run, missing=tmp_path / "none"))
    argv = ["finetune", str(pictures), "--method", "prior", "--model", str(model), "--out", str(tmp_path / "o")]
    assert main([*argv, "--resolution", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_karlo_prior_trains_with_an_image_encoder(pictures, clip_run, tmp_path, capsys):  # noqa: F811
    from latentdiff.families.unclip_tiny import tiny_karlo
    from latentdiff.models.assemble import load_prior

    karlo = tmp_path / "karlo"
    tiny_karlo().save_pretrained(karlo, safe_serialization=True)
    argv = ["finetune", str(pictures), "--method", "prior", "--model", str(karlo), "--resolution", "32"]
    assert main([*argv, "--out", str(tmp_path / "no")]) == 2  # Karlo's folder carries no image encoder
    assert "--image-encoder" in capsys.readouterr().err
    out = finetune(cfg(pictures, karlo, tmp_path / "run", method="prior", max_steps=1,
                       image_encoder=str(clip_run / "image_encoder")))  # fmt: skip
    assert load_prior(out)["prior"].config.embedding_dim == 32  # saved as a Kandinsky 2.2 prior folder
