"""train-vae end to end on 16 tiny generated images and a tiny AutoencoderKL (offline, seconds)."""

import json
import math

import pytest
from PIL import Image, ImageDraw

from latentdiff.cli.train_vae import main
from latentdiff.errors import UsageError
from latentdiff.training.lr_schedule import lr_at
from latentdiff.training.vae import VaeTrainConfig, train_vae

TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=[8, 16],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=32,
    mid_block_add_attention=False,
)
COLORS = ["red", "green", "blue", "orange", "purple", "black", "gold", "teal"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """16 coloured shapes on white, 32x32; the last two are held out."""
    root = tmp_path_factory.mktemp("shapes")
    rows = []
    for i in range(16):
        im = Image.new("RGB", (32, 32), "white")
        draw, box = ImageDraw.Draw(im), (4 + i % 4, 4 + i // 4, 26 - i % 3, 27)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=COLORS[i % len(COLORS)])
        im.save(root / f"{i:02d}.png")
        rows.append({"file_name": f"{i:02d}.png", "text": f"shape {i}", "split": "heldout" if i >= 14 else "train"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def config(shapes, out, **kw):
    # One thread: a tiny model gains nothing from two, and loses a lot on a busy CPU.
    values = dict(
        dataset=str(shapes),
        out=str(out),
        vae=TINY_VAE,
        resolution=32,
        batch_size=4,
        lr=2e-3,
        num_threads=1,
        warmup_steps=0,
        lr_schedule="constant",
        max_steps=6,
        checkpoint_every=100,
        log_every=1,
    )
    return VaeTrainConfig(**{**values, **kw})


def weights(path):
    from safetensors.torch import load_file

    return load_file(path / "vae" / "diffusion_pytorch_model.safetensors")


def test_run_writes_a_loadable_diffusers_vae(shapes, tmp_path):
    from diffusers import AutoencoderKL

    result = train_vae(config(shapes, tmp_path / "run", max_steps=3))
    vae = AutoencoderKL.from_pretrained(tmp_path / "run" / "vae")
    scale = vae.config.scaling_factor
    assert math.isfinite(scale) and scale > 0 and scale != 1 and scale == pytest.approx(result["scaling_factor"])
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["num_heldout"] == 2 and saved["num_train_eval"] == 14
    assert math.isfinite(saved["psnr_heldout"]) and math.isfinite(saved["psnr_train"])
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and {"l1", "mse", "kl", "lr", "images_per_s"} <= set(rows[0])
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_loss_falls_when_overfitting(shapes, tmp_path):
    train_vae(config(shapes, tmp_path / "run", max_steps=24, lr=5e-3))
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.6 * first


def test_resume_equals_an_uninterrupted_run(shapes, tmp_path):
    import torch

    threads = torch.get_num_threads()
    train_vae(config(shapes, tmp_path / "whole", max_steps=6))
    train_vae(config(shapes, tmp_path / "split", max_steps=4, checkpoint_every=2))
    assert main([str(shapes), "--out", str(tmp_path / "split"), "--max-steps", "6", "--resume"]) == 0
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert max((whole[k] - split[k]).abs().max().item() for k in whole) <= 1e-6
    steps = [json.loads(r)["step"] for r in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert torch.get_num_threads() == threads  # num_threads is restored after a run


def test_existing_run_needs_resume_or_overwrite(shapes, tmp_path, capsys):
    train_vae(config(shapes, tmp_path / "run", max_steps=2))
    with pytest.raises(UsageError, match="--resume .* or --overwrite"):
        train_vae(config(shapes, tmp_path / "run", max_steps=2))
    assert main([str(shapes), "--out", str(tmp_path / "run")]) == 2  # no --config: one clear line
    assert "error:" in capsys.readouterr().err
    train_vae(config(shapes, tmp_path / "run", max_steps=2, overwrite=True))


def test_config_errors_are_actionable():
    with pytest.raises(UsageError, match="1.0e-3"):
        VaeTrainConfig(dataset="d", out="o", vae=TINY_VAE, lr="1e-3")
    with pytest.raises(UsageError, match="mixed_precision"):
        VaeTrainConfig(dataset="d", out="o", vae=TINY_VAE, mixed_precision="fp16")
    with pytest.raises(UsageError, match="--config"):
        VaeTrainConfig(dataset="d", out="o")


def test_cosine_schedule_warms_up_then_decays_to_zero():
    """The one schedule of finetune and train-vae: diffusers' get_scheduler, warm-up from 0."""
    assert [lr_at(s, "cosine", 1.0, 2, 10) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert lr_at(9, "cosine", 1.0, 2, 10) < 0.05
    assert lr_at(5, "constant", 1.0, 2, 10) == 1.0 and lr_at(0, "constant", 1.0, 2, 10) == 0.0
    assert lr_at(6, "linear", 1.0, 2, 10) == pytest.approx(0.5)


def test_report_to_tensorboard_logs_the_loss_parts_beside_metrics_jsonl(shapes, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_vae(config(shapes, tmp_path / "run", max_steps=3, report_to="tensorboard"))
    events = EventAccumulator(str(next((tmp_path / "run" / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("loss")] == [r["step"] for r in rows] == [1, 2, 3]
    assert [e.value for e in events.Scalars("kl")] == pytest.approx([r["kl"] for r in rows], rel=1e-6)
    assert {"l1", "mse", "lr", "images_per_s"} <= set(events.Tags()["scalars"])
