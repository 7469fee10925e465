"""`finetune --method prior`: a tiny Kandinsky 2.2 prior trained on finetune's loop (the x0 objective on
normalised CLIP image embeddings, caption dropout, cached embeddings, EMA). The loss falls, resume is
exact, the result loads in KandinskyV22PriorPipeline (same embeddings as our sampler) and feeds a
Stable unCLIP decoder as `--prior`; refusals are one line, exit 2."""

import json

import pytest
import torch
from helpers import assert_same_last_checkpoint
from test_train_upscaler import cfg, pictures  # noqa: F401 (the fixture and the run config)

from latentdiff.cli.main import main
from latentdiff.training.loop import finetune


@pytest.fixture(scope="module")
def prior_folder(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_prior

    return make_tiny_prior(tmp_path_factory.mktemp("models") / "prior", seed=5)


def prior_cfg(pictures, model, out, **kw):  # noqa: F811
    return cfg(pictures, model, out, **{"method": "prior", "caption_dropout": 0.25, **kw})


@pytest.fixture(scope="module")
def trained(pictures, prior_folder, tmp_path_factory):  # noqa: F811
    return finetune(prior_cfg(pictures, prior_folder, tmp_path_factory.mktemp("runs") / "prior"))


def test_loss_falls(pictures, prior_folder, tmp_path):  # noqa: F811
    out = finetune(prior_cfg(pictures, prior_folder, tmp_path / "long", max_steps=30, checkpoint_every=30,
                             batch_size=4, lr=3e-3, caption_dropout=0.0))  # fmt: skip
    rows = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and sum(rows[-5:]) / 5 < 0.5 * sum(rows[:5]) / 5, rows


def test_resume_after_step_one_equals_an_uninterrupted_run(trained, pictures, prior_folder, tmp_path):  # noqa: F811
    split = tmp_path / "split"
    finetune(prior_cfg(pictures, prior_folder, split, max_steps=1))
    finetune(prior_cfg(pictures, prior_folder, split, resume=True))
    assert_same_last_checkpoint(trained, split)


def test_saved_prior_loads_in_kandinsky_pipeline_and_samples_as_ours(trained, prior_folder):
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer

    from latentdiff.families.unclip import prior_embeddings
    from latentdiff.models.assemble import load_prior

    ref = KandinskyV22PriorPipeline.from_pretrained(trained)
    ref.set_progress_bar_config(disable=True)
    before = PriorTransformer.from_pretrained(prior_folder / "prior")
    assert not torch.equal(ref.prior.proj_in.weight, before.proj_in.weight)  # trained
    assert torch.equal(ref.prior.clip_std, before.clip_std)  # its statistics kept
    want = ref("a red circle", num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(9))
    got = prior_embeddings(load_prior(trained), ["a red circle"], 3, 4.0, [torch.Generator().manual_seed(9)], True)
    assert torch.allclose(got, want.image_embeds, atol=1e-5)


def test_saved_prior_feeds_a_decoder(trained, tiny_unclip):
    from latentdiff import Pipeline

    images = Pipeline.from_pretrained(tiny_unclip)("a red circle", steps=2, prior=str(trained), prior_steps=2, seed=1)
    assert images[0].info["latentdiff"]["prior"] == str(trained)


def test_a_fresh_prior_takes_the_datasets_statistics(pictures, prior_folder, tmp_path):  # noqa: F811
    import shutil

    from safetensors.torch import load_file, save_file

    fresh = tmp_path / "fresh"
    shutil.copytree(prior_folder, fresh)
    weights = fresh / "prior" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    save_file({**sd, "clip_std": sd["clip_std"] * 0, "clip_mean": sd["clip_mean"] * 0}, str(weights))
    out = finetune(prior_cfg(pictures, fresh, tmp_path / "run", max_steps=1))
    std = load_file(str(out / "prior" / "diffusion_pytorch_model.safetensors"))["clip_std"]
    assert (std > 0).all()
    from latentdiff.training.export import export_checkpoint

    again = export_checkpoint(out, tmp_path / "x")  # the checkpoint carries them
    assert torch.equal(load_file(str(again / "prior" / "diffusion_pytorch_model.safetensors"))["clip_std"], std)


def _refused(capsys, *argv) -> str:
    assert main(["finetune", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_refusals_are_one_line(pictures, prior_folder, tiny_sd1, tmp_path, capsys):  # noqa: F811
    base = [pictures, "--method", "prior", "--resolution", "32"]
    assert "Kandinsky 2.2 prior" in _refused(capsys, *base, "--model", tiny_sd1, "--out", tmp_path / "a")
    err = _refused(capsys, *base, "--model", prior_folder, "--out", tmp_path / "b", "--image-encoder", tmp_path)
    assert "CLIPVisionModelWithProjection" in err
    assert "--train-text-encoder" in _refused(
        capsys, *base, "--model", prior_folder, "--out", tmp_path / "c", "--train-text-encoder"
    )
    err = _refused(capsys, pictures, "--model", tiny_sd1, "--out", tmp_path / "d", "--image-encoder", prior_folder)
    assert "--method prior" in err


def test_export_of_a_checkpoint_is_the_run_at_that_step(trained, tmp_path):
    from safetensors.torch import load_file

    from latentdiff.training.export import export_checkpoint

    out = export_checkpoint(trained, tmp_path / "x", step=2)
    a, b = (load_file(str(d / "prior" / "diffusion_pytorch_model.safetensors")) for d in (trained, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


ENCODER_CONFIGS = ["", "{", "[]", '{"projection_dim": "x"}', '{"hidden_size": -1}', '{"projection_dim": 16}', "\0"]


def encoder_paths(root) -> list[str]:
    """Folders whose config.json is each of ENCODER_CONFIGS (no weights), a file, a missing path."""
    folders = []
    for k, config in enumerate(ENCODER_CONFIGS):
        (root / str(k)).mkdir()
        (root / str(k) / "config.json").write_text(config)
        folders.append(str(root / str(k)))
    return [*folders, folders[0] + "/config.json", str(root / "none")]


def test_fuzz_image_encoder_folders(prior_folder, tmp_path):
    """--image-encoder: a folder with a damaged, wrong or other-width config and no weights; a file; a
    missing path; any text: each one line (UsageError or ModelError), before any training."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from latentdiff.errors import LatentDiffError
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.prior import load_prior_parts

    paths = encoder_paths(tmp_path)

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(st.sampled_from(paths) | st.text(max_size=8))
    def one(path):
        with pytest.raises(LatentDiffError) as e:
            cfg = FinetuneConfig(dataset="d", out="o", model=str(prior_folder), method="prior", image_encoder=path)
            load_prior_parts(cfg)
        assert str(e.value) and "\n" not in str(e.value)

    one()
