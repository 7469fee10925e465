"""finetune's kohya-style dataset options (--caption-extension, --repeats, N_name folders), the file
modes of what a run writes, and the caching pre-pass's progress."""

import os
from collections import Counter

import pytest
import torch
from PIL import Image

from latentdiff import UsageError
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.data.order import DataOrder
from latentdiff.training.data.scan import scan_dataset


def image(path, color="red"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color).save(path)
    return path


def config(**kw):
    return FinetuneConfig(**{"dataset": "d", "model": "m", "out": "runs/mine", **kw})


def test_caption_extension(tmp_path):
    image(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("a red square")
    (tmp_path / "a.txt").write_text("the .txt caption")
    assert [r.caption for r in scan_dataset(tmp_path, 64, caption_extension=".caption").records] == ["a red square"]
    assert [r.caption for r in scan_dataset(tmp_path, 64).records] == ["the .txt caption"]
    (tmp_path / "a.txt").unlink()
    with pytest.raises(UsageError, match="no .txt beside them"):
        scan_dataset(tmp_path, 64)
    assert config(caption_extension="caption").caption_extension == ".caption"
    with pytest.raises(UsageError, match="image extension"):
        config(caption_extension=".png")
    with pytest.raises(UsageError, match="must look like"):
        config(caption_extension="../x")


def test_repeats_and_kohya_folders(tmp_path):
    image(tmp_path / "10_sks dog" / "a.png")  # no caption: the folder's name is the caption
    image(tmp_path / "10_sks dog" / "b.png")
    (tmp_path / "10_sks dog" / "b.txt").write_text("sks dog on grass")
    image(tmp_path / "1_plain" / "c.png")
    (tmp_path / "1_plain" / "c.txt").write_text("a plain picture")
    image(tmp_path / "loose.png")
    (tmp_path / "loose.txt").write_text("a loose picture")
    image(tmp_path / "2023_trip" / "sub" / "d.png")  # N_name counts at the top level only, as in kohya
    (tmp_path / "2023_trip" / "sub" / "d.txt").write_text("deep")
    scan = scan_dataset(tmp_path, 64, repeats=3, missing_captions="error")
    got = {r.path.relative_to(tmp_path).as_posix(): (r.caption, r.repeats) for r in scan.records}
    assert got == {
        "10_sks dog/a.png": ("sks dog", 10),
        "10_sks dog/b.png": ("sks dog on grass", 10),
        "1_plain/c.png": ("a plain picture", 1),
        "loose.png": ("a loose picture", 3),
        "2023_trip/sub/d.png": ("deep", 2023),
    }
    note = next(n for n in scan.notes if n.startswith("repeats"))
    assert "'10_sks dog' x10 (2 image(s))" in note and f"an epoch is {10 + 10 + 1 + 3 + 2023} samples of 5" in note
    assert not any(n.startswith("repeats") for n in scan_dataset(tmp_path / "1_plain", 64).notes)
    with pytest.raises(UsageError, match="--repeats must be >= 1"):
        config(repeats=0)


@pytest.mark.parametrize("buckets", [None, [0, 1, 0, 1, 1]])
def test_data_order_shows_each_image_its_repeats_times_an_epoch(buckets):
    repeats = [1, 4, 2, 1, 3]
    order = DataOrder(5, 2, seed=0, bucket_of=buckets, repeats=repeats)
    seen = Counter(i for batch in order.epoch_batches(0) for i in batch)
    assert [seen[i] for i in range(5)] == repeats
    plain = DataOrder(5, 2, seed=0, bucket_of=buckets)
    assert plain.epoch_batches(1) == DataOrder(5, 2, seed=0, bucket_of=buckets, repeats=[1] * 5).epoch_batches(1)


def test_what_a_run_writes_is_readable_as_the_umask_allows(squares, tiny_sd1, tmp_path):
    """safetensors (0.8) and mkstemp create files 0600: weights others could not read. Every file of a
    run, and of a model saved from it, gets 0666 less the umask (022 here: 0644; 027: 0640)."""
    from latentdiff.training.loop import finetune

    old = os.umask(0o027)
    try:
        out = finetune(
            FinetuneConfig(
                dataset=str(squares),
                model=str(tiny_sd1),
                out=str(tmp_path / "run"),
                max_steps=1,
                batch_size=2,
                resolution=64,
                method="full",
                ema_decay=None,
            )
        )
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "diffusion_pytorch_model.safetensors" for p in files)
    assert any(p.name == "trainable.safetensors" for p in files)
    assert {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} == {
        p.relative_to(out).as_posix(): "0o640" for p in files
    }


def test_lora_files_are_0644_under_the_usual_umask(squares, tiny_sd1, tmp_path):
    from latentdiff.training.loop import finetune

    old = os.umask(0o022)
    try:
        out = finetune(
            FinetuneConfig(
                dataset=str(squares),
                model=str(tiny_sd1),
                out=str(tmp_path / "run"),
                max_steps=1,
                batch_size=2,
                resolution=64,
            )
        )
    finally:
        os.umask(old)
    weights = sorted(out.rglob("*.safetensors"))
    assert [p.name for p in weights] == ["trainable.safetensors", "pytorch_lora_weights.safetensors", "run.safetensors"]
    assert {oct(p.stat().st_mode & 0o777) for p in weights} == {"0o644"}


def test_caching_progress_moves_image_by_image_on_the_cpu(tiny_sd1, tmp_path, monkeypatch):
    """The bar used to move once per 32-image batch: 'caching latents 0/20' sat there for minutes."""
    import tqdm.auto

    from latentdiff.models.assemble import load_components
    from latentdiff.training.batches import BatchSource
    from latentdiff.training.data.dataset import ImageCaptionDataset

    for i in range(5):
        image(tmp_path / f"{i}.png", (40 * i, 0, 0))
        (tmp_path / f"{i}.txt").write_text(f"square {i}")
    records = scan_dataset(tmp_path, 32).records
    updates = []

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    BatchSource(
        load_components(tiny_sd1),
        ImageCaptionDataset(records, 32),
        [r.caption for r in records],
        cache=True,
        flip=False,
        train_text=False,
        caption_dropout=0.0,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    assert updates == [1] * 5


@pytest.mark.parametrize("given, expected", [(None, 1), (2, 2)])
def test_training_threads_default_to_one_for_a_small_model(
    squares, tiny_sd1, tmp_path, monkeypatch, capsys, given, expected
):
    """As generate did (runtime.threads.cpu_threads_for): a model under 50M parameters trains on 1 CPU thread
    unless --num-threads says otherwise; the caller's count comes back afterwards."""
    import latentdiff.training.loop as loop
    from latentdiff.runtime.device import notice
    from latentdiff.runtime.threads import torch_threads

    seen = []
    real = loop._train
    monkeypatch.setattr(loop, "_train", lambda *a: (seen.append(torch.get_num_threads()), real(*a))[1])
    notice.cache_clear()
    with torch_threads(2):
        loop.finetune(
            FinetuneConfig(
                dataset=str(squares),
                model=str(tiny_sd1),
                out=str(tmp_path / "run"),
                max_steps=1,
                batch_size=2,
                resolution=64,
                num_threads=given,
            )
        )
        assert seen == [expected] and torch.get_num_threads() == 2
    said = "training on 1 CPU thread(s), not 2" in capsys.readouterr().err
    assert said == (given is None)


def test_threads_the_user_set_in_omp_num_threads_are_kept(monkeypatch):
    """The model card trains with OMP_NUM_THREADS=2: an explicit count is the user's choice."""
    from latentdiff.runtime.threads import cpu_threads_for

    cpu = torch.device("cpu")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads_for(cpu, 1_000) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads_for(cpu, 1_000) is None


def test_train_vae_threads_default_to_one_for_a_small_vae(squares, tmp_path, monkeypatch):
    import latentdiff.training.vae as vae
    from latentdiff.runtime.threads import torch_threads
    from latentdiff.training.vae_config import VaeTrainConfig

    seen = []
    real = vae.train_loop
    monkeypatch.setattr(vae, "train_loop", lambda *a: (seen.append(torch.get_num_threads()), real(*a))[1])
    arch = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=[8, 8],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )
    with torch_threads(2):
        vae.train_vae(
            VaeTrainConfig(
                dataset=str(squares),
                out=str(tmp_path / "vae"),
                vae=arch,
                resolution=32,
                max_steps=1,
                batch_size=2,
                warmup_steps=0,
                eval_train_images=1,
            )
        )
        assert seen == [1] and torch.get_num_threads() == 2


def test_help_shows_each_flags_default():
    from latentdiff.cli.main import build_parser

    for command, expected in (
        ("finetune", ["--lr LR", "(default: 0.0001)", "(default: 1000)", "(required)"]),
        ("train-vae", ["(default: 0.001)", "(default: cosine)", "(default: off)"]),
    ):
        parser = build_parser()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
        text = " ".join(sub.format_help().split())
        assert all(e in text for e in expected), command
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help", "config"):
                assert "(default" in (action.help or "") or "(required)" in action.help, action.dest


def test_a_resolution_other_than_the_models_own_is_said(squares, tiny_sd1, tmp_path, capsys):
    from latentdiff.training.loop import finetune

    for resolution, said in ((32, True), (64, False)):  # the tiny model makes 64x64 images
        finetune(
            FinetuneConfig(
                dataset=str(squares),
                model=str(tiny_sd1),
                out=str(tmp_path / f"r{resolution}"),
                max_steps=1,
                batch_size=2,
                resolution=resolution,
            )
        )
        lines = [x for x in capsys.readouterr().err.splitlines() if "--resolution" in x]
        assert len(lines) == said and (not said or "makes 64x64 images" in lines[0] and "--resolution 64" in lines[0])
