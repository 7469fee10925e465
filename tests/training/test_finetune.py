"""Fine-tuning end to end on tiny models: outputs that load, exact resume, crash safety."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import cfg, killed_after_first_checkpoint, max_diff, weights
from safetensors.torch import load_file

from latentdiff import LatentDiffError, Pipeline, UsageError
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.loop import finetune


def test_lora_output_loads_in_latentdiff_and_diffusers(dataset, tiny_sd1, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = finetune(
        cfg(
            dataset,
            tiny_sd1,
            tmp_path / "lora",
            method="lora",
            validate_every=4,
            validation_prompts=["a red circle"],
            validation_steps=2,
        )
    )
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((out / "latentdiff.json").read_text())["base_model"] == str(tiny_sd1.resolve())
    assert len(list((out / "samples").glob("*.png"))) == 1
    ours = Pipeline.from_pretrained(out, device="cpu", dtype="fp32")
    ours.progress = False
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None, requires_safety_checker=False)
    ref.load_lora_weights(str(out))
    ref.set_progress_bar_config(disable=True)
    mine = np.asarray(ours("a red circle", steps=2, seed=0)[0], dtype=int)
    theirs = np.asarray(
        ref("a red circle", num_inference_steps=2, generator=[torch.Generator().manual_seed(0)]).images[0], dtype=int
    )
    assert np.abs(mine - theirs).max() <= 1
    base = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    base.progress = False
    assert np.abs(mine - np.asarray(base("a red circle", steps=2, seed=0)[0], dtype=int)).max() > 1


def test_full_output_is_a_diffusers_model(dataset, tiny_sd2, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = finetune(cfg(dataset, tiny_sd2, tmp_path / "full", method="full", train_text_encoder=True, ema_decay=0.9))
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.config.use_linear_projection  # the SD2-like base architecture is kept
    ours = Pipeline.from_pretrained(out, device="cpu", dtype="fp32")
    ours.progress = False
    assert ours("a blue circle", steps=2)[0].size == (64, 64)
    ema = load_file(str(ckpt.latest_checkpoint(out) / "ema.safetensors"))
    saved = ours.components.unet.state_dict()
    key = next(k for k in ema if k.startswith("unet."))
    assert torch.allclose(saved[key[5:]].float(), ema[key]), "the final model carries the EMA weights"
    from latentdiff.training.export import export_checkpoint

    raw = weights(out)[key]
    assert not torch.allclose(raw, ema[key]), "the EMA must differ from the raw weights for this to mean anything"
    exported = export_checkpoint(out, tmp_path / "raw", use_ema=False)  # `latentdiff export --no-ema`
    assert torch.equal(load_file(str(exported / "unet" / "diffusion_pytorch_model.safetensors"))[key[5:]], raw)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_killed_and_resumed_equals_uninterrupted(dataset, tiny_sd1, tmp_path, method, monkeypatch):
    run = dict(method=method, grad_accum=2, lr_schedule="cosine", warmup_steps=1, flip=True)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    finetune(cfg(dataset, tiny_sd1, straight, **run))
    killed_after_first_checkpoint(lambda: finetune(cfg(dataset, tiny_sd1, interrupted, **run)), monkeypatch)
    assert ckpt.latest_checkpoint(interrupted).name == "step-00000002"
    finetune(cfg(dataset, tiny_sd1, interrupted, **run, resume=True))
    assert max_diff(weights(straight), weights(interrupted)) <= 1e-6
    assert weights(straight).keys() == weights(interrupted).keys()


def test_kill_during_checkpoint_save_resumes_from_previous(dataset, tiny_sd1, tmp_path, monkeypatch):
    import latentdiff.training.loop as loop

    out = tmp_path / "run"
    real_write = loop.write_trainable
    calls = []

    def dies_mid_write(d, *a, **k):
        calls.append(d)
        if len(calls) == 2:  # second checkpoint: half-written, then the process dies
            (d / "trainable.safetensors").write_bytes(b"partial")
            raise KeyboardInterrupt
        real_write(d, *a, **k)

    monkeypatch.setattr(loop, "write_trainable", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg(dataset, tiny_sd1, out, method="lora", max_steps=6))
    assert [p.name for p in ckpt.complete_checkpoints(out)] == ["step-00000002"]
    monkeypatch.setattr(loop, "write_trainable", real_write)
    finetune(cfg(dataset, tiny_sd1, out, method="lora", max_steps=6, resume=True))
    assert [p.name for p in ckpt.complete_checkpoints(out)] == ["step-00000004", "step-00000006"]
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_existing_run_needs_resume_or_overwrite(dataset, tiny_sd1, tmp_path):
    out = tmp_path / "run"
    finetune(cfg(dataset, tiny_sd1, out, max_steps=2))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(UsageError, match="already holds a run"):
        finetune(cfg(dataset, tiny_sd1, out, max_steps=2))
    assert sorted(p.name for p in out.iterdir()) == before
    (out / "my-notes.txt").write_text("keep me")
    finetune(cfg(dataset, tiny_sd1, out, max_steps=2, overwrite=True))
    assert (out / "my-notes.txt").read_text() == "keep me"


def test_resume_may_raise_max_steps(dataset, tiny_sd1, tmp_path):
    out = tmp_path / "run"
    finetune(cfg(dataset, tiny_sd1, out, max_steps=2))
    finetune(cfg(dataset, tiny_sd1, out, max_steps=4, resume=True))
    assert ckpt.read_manifest(ckpt.latest_checkpoint(out))["step"] == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]


def test_nan_loss_stops_with_clear_message(dataset, tiny_sd1, tmp_path, monkeypatch):
    import latentdiff.training.loop as loop

    real = loop.diffusion_loss
    monkeypatch.setattr(loop, "diffusion_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(LatentDiffError, match="loss became nan at step 0"):
        finetune(cfg(dataset, tiny_sd1, tmp_path / "run", max_steps=2))
    assert ckpt.latest_checkpoint(tmp_path / "run") is None


def test_loss_goes_down_when_overfitting(dataset, tiny_sd1, tmp_path):
    out = finetune(
        cfg(
            dataset,
            tiny_sd1,
            tmp_path / "fit",
            method="full",
            max_steps=60,
            batch_size=4,
            lr=2e-3,
            caption_dropout=0.0,
            checkpoint_every=60,
            ema_decay=None,
            log_every=1,
        )
    )
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_bad_files_are_skipped_and_listed(dataset, tiny_sd1, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(dataset, mixed)
    (mixed / "empty.png").write_bytes(b"")
    (mixed / "empty.txt").write_text("nothing")
    (mixed / "text.png").write_text("not an image")
    (mixed / "text.txt").write_text("a lie")
    good = (mixed / "0.png").read_bytes()
    (mixed / "cut.png").write_bytes(good[: len(good) // 2])
    (mixed / "cut.txt").write_text("half")
    out = finetune(cfg(mixed, tiny_sd1, tmp_path / "run", max_steps=1))
    skipped = (out / "skipped.txt").read_text()
    assert all(name in skipped for name in ("empty.png", "text.png", "cut.png"))
    assert (out / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize("broken", ["captions", "images"])
def test_a_refusal_about_many_files_is_one_line_naming_the_runs_list(dataset, tiny_sd1, tmp_path, broken):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    for i in range(4):
        (data / f"x{i}.png").write_bytes((data / "0.png").read_bytes())
    if broken == "images":
        for png in data.glob("*.png"):
            png.write_text("not an image")
            png.with_suffix(".txt").write_text("c")
    with pytest.raises(UsageError) as e:
        finetune(cfg(data, tiny_sd1, tmp_path / "run", max_steps=1))
    message = str(e.value)
    assert "\n" not in message and f"listed in {tmp_path / 'run' / 'skipped.txt'}" in message
    names = [line.split("\t")[0] for line in (tmp_path / "run" / "skipped.txt").read_text().splitlines()]
    expected = [f"x{i}.png" for i in range(4)]
    if broken == "images":
        expected = sorted(p.name for p in data.glob("*.png"))
    assert names == expected and "skipped.txt" not in {p.name for p in data.iterdir()}


def test_from_architecture_config_trains_everything(dataset, tmp_path):
    import yaml

    from latentdiff.models.testing import tiny_arch

    arch = tmp_path / "arch.yaml"
    arch.write_text(yaml.safe_dump(tiny_arch("sd1")))
    out = finetune(cfg(dataset, arch, tmp_path / "scratch", method="full", sample_defaults={"steps": 3}))
    names = weights(out).keys()
    assert any(k.startswith("text_encoder.") for k in names) and any(k.startswith("unet.") for k in names)
    pipe = Pipeline.from_pretrained(out, device="cpu", dtype="fp32")
    pipe.progress = False
    assert pipe("a green circle")[0].info["latentdiff"]["steps"] == 3
    # `latentdiff export` rebuilds the same model from the last checkpoint's EMA weights
    from latentdiff.training.export import export_checkpoint

    exported = Pipeline.from_pretrained(export_checkpoint(out, tmp_path / "exported"), device="cpu", dtype="fp32")
    exported.progress = False
    assert np.array_equal(np.asarray(pipe("a green circle")[0]), np.asarray(exported("a green circle")[0]))
    with pytest.raises(UsageError, match="needs --method full"):
        finetune(cfg(dataset, arch, tmp_path / "scratch-lora", method="lora"))


def test_accelerate_launch_two_cpu_processes(dataset, tiny_sd1, tmp_path):
    """DDP over gloo: accelerate's torchrun launcher with two processes on a GPU-less machine.
    (accelerate's `--cpu --num_processes N` runs N processes only through mpirun.)"""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "latentdiff.cli",
        "finetune",
        str(dataset),
        "--model",
        str(tiny_sd1),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "1",
        "--resolution",
        "64",
        "--checkpoint-every",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines() == [str(out)]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["processes"] == 2 and metrics[-1]["step"] == 2
    assert (out / "pytorch_lora_weights.safetensors").is_file()


def test_arch_init_from_grows_a_trained_model_without_changing_it(tiny_sd1, tmp_path):
    """`init_from` + `addition_embed_type: text`: the grown UNet starts as the old one exactly,
    has a trainable text-time embedding, and refuses a model whose weights do not fit."""
    from latentdiff.models.assemble import load_components
    from latentdiff.models.build import build_components
    from latentdiff.models.testing import tiny_arch

    arch = tiny_arch("sd1")
    arch["unet"] = {**arch["unet"], "addition_embed_type": "text", "addition_embed_type_num_heads": 2}
    arch["init_from"] = str(tiny_sd1)
    grown, old = build_components(arch, []), load_components(tiny_sd1)
    assert grown.tokenizer.get_vocab() == old.tokenizer.get_vocab()
    ids = old.tokenizer(["a red circle", "unseen words"], padding="max_length", return_tensors="pt").input_ids
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([900, 10])
    with torch.no_grad():
        ctx = old.text_encoder(ids)[0]
        assert torch.equal(grown.text_encoder(ids)[0], ctx)
        assert torch.equal(grown.unet(x, t, ctx).sample, old.unet(x, t, ctx).sample)
        grown.unet.add_embedding.norm2.weight.fill_(1.0)  # once trained, the new path changes the output
        assert not torch.allclose(grown.unet(x, t, ctx).sample, old.unet(x, t, ctx).sample)
    arch["unet"]["block_out_channels"] = (32, 48)
    with pytest.raises(UsageError, match="does not fit"):
        build_components(arch, [])
    arch["init_from"] = str(tmp_path)
    with pytest.raises(UsageError, match="not a model folder"):
        build_components(arch, [])
