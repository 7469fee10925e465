"""The run-folder guard: a run never destroys what is not its own (finetune and train-vae alike)."""

import json
import shutil

import pytest

from latentdiff import UsageError
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.loop import finetune
from latentdiff.training.runfolder import check_run_folder


@pytest.fixture
def dataset(squares):
    return squares


def cfg(dataset, model, out, **kw):
    base = dict(
        dataset=str(dataset),
        model=str(model),
        out=str(out),
        max_steps=1,
        batch_size=2,
        resolution=64,
        checkpoint_every=1,
        seed=1,
    )
    return FinetuneConfig(**{**base, **kw})


def tree(path):
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else b"") for p in path.rglob("*"))


def test_overwrite_on_a_folder_without_a_run_deletes_nothing(dataset, tiny_sd1, tmp_path):
    out = tmp_path / "mine"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "holiday.png").write_bytes(b"precious")
    (out / "logs").mkdir()
    (out / "config.yaml").write_text("my: settings\n")
    before = tree(out)
    with pytest.raises(UsageError, match="not a latentdiff finetune run but holds config.yaml, logs, samples"):
        finetune(cfg(dataset, tiny_sd1, out, overwrite=True))
    assert tree(out) == before


@pytest.mark.parametrize("where", [".", "sub"])
def test_out_in_the_dataset_is_refused(dataset, tiny_sd1, where):
    before = tree(dataset)
    with pytest.raises(UsageError, match="dataset folder"):
        finetune(cfg(dataset, tiny_sd1, dataset / where, overwrite=True))
    assert tree(dataset) == before


def test_out_naming_a_model_is_refused(dataset, tiny_sd1, tiny_sd2, tmp_path):
    before = tree(tiny_sd1)
    with pytest.raises(UsageError, match="is the --model folder"):
        finetune(cfg(dataset, tiny_sd1, tiny_sd1, overwrite=True))
    other = shutil.copytree(tiny_sd2, tmp_path / "other-model")
    with pytest.raises(UsageError, match="not a latentdiff finetune run but holds .*model_index.json"):
        finetune(cfg(dataset, tiny_sd1, other, overwrite=True))
    assert tree(tiny_sd1) == before
    assert tree(other) == tree(tiny_sd2)


def test_failed_first_attempt_does_not_block_the_retry(dataset, tiny_sd1, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UsageError):
        finetune(cfg(dataset, tmp_path / "no-such-model", out))
    assert (out / "run.json").is_file()  # the attempt got as far as marking the folder
    with pytest.raises(UsageError, match="no complete checkpoint"):
        finetune(cfg(dataset, tiny_sd1, out, resume=True))
    finetune(cfg(dataset, tiny_sd1, out))
    assert ckpt.latest_checkpoint(out).name == "step-00000001"
    assert json.loads((out / "run.json").read_text())["command"] == "finetune"


def test_overwrite_removes_only_the_run_entries(dataset, tiny_sd1, tmp_path):
    out = tmp_path / "run"
    finetune(cfg(dataset, tiny_sd1, out))
    (out / "my-notes.txt").write_text("keep me")
    (out / "elsewhere").mkdir()
    manifest = json.loads((out / "run.json").read_text())
    # A tampered run.json cannot widen what --overwrite deletes.
    manifest["entries"] += ["my-notes.txt", "elsewhere", "..", "/"]
    (out / "run.json").write_text(json.dumps(manifest))
    finetune(cfg(dataset, tiny_sd1, out, overwrite=True))
    assert (out / "my-notes.txt").read_text() == "keep me" and (out / "elsewhere").is_dir()
    assert tmp_path.is_dir() and dataset.is_dir()


def test_one_guard_for_train_vae(dataset, tmp_path):
    from latentdiff.training.vae import VaeTrainConfig, train_vae

    vae = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=[8, 16],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
    )
    with pytest.raises(UsageError, match="dataset folder"):
        train_vae(VaeTrainConfig(dataset=str(dataset), out=str(dataset), vae=vae, resolution=32, overwrite=True))
    finetune_run = tmp_path / "ft"
    finetune_run.mkdir()
    (finetune_run / "run.json").write_text(json.dumps({"command": "finetune", "entries": []}))
    with pytest.raises(UsageError, match="holds a `latentdiff finetune` run"):
        train_vae(VaeTrainConfig(dataset=str(dataset), out=str(finetune_run), vae=vae, resolution=32, overwrite=True))


def test_guard_touches_nothing_and_names_its_action(dataset, tmp_path):
    entries = ("checkpoints", "config.yaml")
    assert check_run_folder(tmp_path / "new", "finetune", entries, dataset=dataset) == "new"
    assert not (tmp_path / "new").exists()
    with pytest.raises(UsageError, match="holds no run to resume"):
        check_run_folder(tmp_path / "new", "finetune", entries, dataset=dataset, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        check_run_folder(tmp_path / "file", "finetune", entries, dataset=dataset)
