"""Captions in training are seen as generation sees prompts; several processes train one model."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from latentdiff.families.registry import family_of
from latentdiff.models.assemble import load_components
from latentdiff.prompts.chunks import chunk_count
from latentdiff.training.batches import BatchSource, every_caption, pick_captions

ROOT = Path(__file__).resolve().parents[2]
LONG = " ".join(["a red apple on a green table beside a blue cup"] * 12)  # over one 75-token window


def test_long_captions_are_chunked_like_generation_prompts(tiny_sd1):
    c = load_components(tiny_sd1)
    captions = [LONG, "a red apple"]
    source = BatchSource(
        c,
        None,
        captions,
        cache=False,
        flip=False,
        train_text=False,
        caption_dropout=0.0,
        device=torch.device("cpu"),
        dtype=torch.float32,
        progress=False,
    )
    gen = torch.Generator().manual_seed(0)
    encode = family_of(c).conditioning(c)  # what generation uses
    expected = encode(captions, None, 64, 64)[0].hidden
    n = chunk_count(c.tokenizer, [LONG])
    assert n > 1 and expected.shape[1] == n * 77
    assert torch.allclose(source.context([0, 1], gen).hidden, expected, atol=1e-5)
    source.embeddings = source.conditioning.embed_each(captions)  # the cached path pads short captions the same way
    assert source.embeddings[LONG].hidden.shape[1] == n * 77 and source.embeddings["a red apple"].hidden.shape[1] == 77
    assert torch.allclose(source.context([0, 1], gen).hidden, expected, atol=1e-5)
    assert torch.allclose(source.context([1], gen).hidden, encode(["a red apple"], None, 64, 64)[0].hidden)


def test_alt_captions_draw_each_caption_among_its_alternatives_from_the_step_seed(tiny_sd1):
    """finetune --alt-captions: a step's caption is one of the image's own and its alt_texts, uniformly,
    drawn from the step's generator (so a resumed run draws the same); without it, always its own."""
    c = load_components(tiny_sd1)
    opts = dict(cache=False, flip=False, train_text=False, device=torch.device("cpu"), dtype=torch.float32)
    alts = [("red apple, fruit", "red apple, food & drink"), ()]
    source = BatchSource(c, None, ["red apple", "cup"], caption_dropout=0.0, progress=False, alternatives=alts, **opts)
    seen = [pick_captions(source.captions, source.options, [0, 1], [False, False], torch.Generator().manual_seed(s))
            for s in range(40)]  # fmt: skip
    assert {t[0] for t in seen} == {"red apple", "red apple, fruit", "red apple, food & drink"}
    assert {t[1] for t in seen} == {"cup"}
    gen = torch.Generator().manual_seed(7)
    context = source.context([0, 1, 0, 0], gen).hidden
    drop = source.dropped
    texts = pick_captions(
        source.captions, source.options, [0, 1, 0, 0], drop, _after_drop(torch.Generator().manual_seed(7), 4)
    )
    encode = family_of(c).conditioning(c)
    assert torch.allclose(context, encode(texts, None, 64, 64)[0].hidden, atol=1e-5)
    plain = BatchSource(c, None, ["red apple", "cup"], caption_dropout=0.0, progress=False, **opts)
    assert pick_captions(plain.captions, plain.options, [0, 1], [False, False], gen) == ["red apple", "cup"]
    records = [
        SimpleNamespace(caption="red apple", alt_captions=alts[0]),
        SimpleNamespace(caption="cup", alt_captions=()),
    ]
    assert every_caption(records, True) == ["red apple", *alts[0], "cup"]
    assert every_caption(records, False) == ["red apple", "cup"]


def _after_drop(gen: torch.Generator, n: int) -> torch.Generator:
    """The generator as BatchSource.context leaves it after drawing the dropout mask of n samples."""
    torch.rand(n, generator=gen)
    return gen


SPY = """
import sys
from safetensors.torch import save_file
import latentdiff.training.loop as loop
real = loop._train
def spy(*a):
    real(*a)
    acc, named = a[2], a[3].params
    save_file({k: p.detach().contiguous() for k, p in named.items()}, sys.argv[1] + f"/rank{acc.process_index}.safetensors")
loop._train = spy
from latentdiff.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_processes_keep_unet_and_text_encoder_identical(tiny_sd1, tmp_path):
    """DDP over gloo with --train-text-encoder: every trained weight is the same on both ranks."""
    ds = tmp_path / "ds"
    ds.mkdir()
    for i, color in enumerate(["red", "green", "blue", "yellow"]):
        Image.new("RGB", (64, 64), color).save(ds / f"{i}.png")
        (ds / f"{i}.txt").write_text(f"a {color} square " + LONG * (i == 0))
    spy, dumps = tmp_path / "spy.py", tmp_path / "dumps"
    spy.write_text(SPY)
    dumps.mkdir()
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
        str(spy),
        str(dumps),
        "finetune",
        str(ds),
        "--model",
        str(tiny_sd1),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "3",
        "--batch-size",
        "1",
        "--resolution",
        "64",
        "--train-text-encoder",
        "--lr",
        "1e-2",
        "--caption-dropout",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-6000:]
    a, b = load_file(str(dumps / "rank0.safetensors")), load_file(str(dumps / "rank1.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("text_encoder.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    assert all(torch.equal(saved[k], a[k]) for k in a)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["processes"] == 2


def test_any_checkpoint_of_a_lora_run_exports_as_a_lora(tiny_sd1, tmp_path):
    import numpy as np

    from latentdiff import Pipeline
    from latentdiff.cli.main import main
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    ds = tmp_path / "ds"
    ds.mkdir()
    for i, color in enumerate(["red", "blue"]):
        Image.new("RGB", (64, 64), color).save(ds / f"{i}.png")
        (ds / f"{i}.txt").write_text(f"a {color} square")
    run = finetune(
        FinetuneConfig(
            dataset=str(ds),
            model=str(tiny_sd1),
            out=str(tmp_path / "run"),
            max_steps=2,
            batch_size=2,
            resolution=64,
            checkpoint_every=1,
            lr=1e-2,
            lora_rank=2,
            train_text_encoder=True,
        )
    )
    assert main(["export", str(run), "--step", "2", "--out", str(tmp_path / "two")]) == 0
    assert main(["export", str(run), "--step", "1", "--out", str(tmp_path / "one")]) == 0

    def render(model):
        pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
        pipe.progress = False
        return np.asarray(pipe("a red square", steps=2, seed=0)[0], dtype=int)

    final, two, one = render(run), render(tmp_path / "two"), render(tmp_path / "one")
    assert np.array_equal(final, two)  # the last checkpoint exports as the run's own LoRA
    assert np.abs(final - one).max() > 0  # an earlier one is an earlier model
    assert main(["export", str(run), "--step", "1", "--out", str(tmp_path / "one")]) == 2  # never overwrites


def _red_square_run(tiny_sd1, tmp_path, **kw):
    """A 2-step LoRA run on one red square, logging every step, one validation image at step 2."""
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    ds = tmp_path / "ds"
    ds.mkdir()
    Image.new("RGB", (64, 64), "red").save(ds / "0.png")
    (ds / "0.txt").write_text("a red square")
    return finetune(
        FinetuneConfig(
            dataset=str(ds),
            model=str(tiny_sd1),
            out=str(tmp_path / "run"),
            max_steps=2,
            batch_size=1,
            resolution=64,
            log_every=1,
            validate_every=2,
            validation_steps=1,
            validation_prompts=["a red square"],
            **kw,
        )
    )


def test_report_to_tensorboard_logs_scalars_and_images_beside_metrics_jsonl(tiny_sd1, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _red_square_run(tiny_sd1, tmp_path, report_to="tensorboard", lr_schedule="linear", warmup_steps=1)
    events = EventAccumulator(
        str(next((out / "logs").rglob("events.out.tfevents.*")).parent), size_guidance={"images": 0}
    )
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert {"lr", "images_per_s"} <= set(events.Tags()["scalars"])
    assert len(events.Tags()["images"]) == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def _wandb_history(run_file) -> list[dict]:
    """The history rows of an offline run's .wandb file: wandb's LevelDB-style log (7-byte header,
    32 KiB blocks, records of crc(4) length(2) type(1) data) of its Record protobufs."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, pos, chunk, rows = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.HasField("history"):
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_report_to_wandb_offline_logs_what_metrics_jsonl_holds(tiny_sd1, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'latentdiff[wandb]')")
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb"),
        "WANDB_CONSOLE": "off",
        "WANDB_SILENT": "true",
    }.items():
        monkeypatch.setenv(key, value)
    out = _red_square_run(tiny_sd1, tmp_path, report_to="wandb")
    history = _wandb_history(next((tmp_path / "wandb").rglob("offline-run-*/run-*.wandb")))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [h for h in history if "loss" in h]
    assert [(h["_step"], h["loss"], h["lr"]) for h in logged] == [(r["step"], r["loss"], r["lr"]) for r in rows]
    assert [(h["_step"], h["validation/captions"]) for h in history if "validation/captions" in h] == [
        (2, ["a red square"])
    ]


@pytest.mark.parametrize("command", ["finetune", "train-vae"])
def test_report_to_without_its_package_is_one_line(tiny_sd1, tmp_path, monkeypatch, capsys, command):
    from latentdiff.cli.main import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: find_spec says None
    ds = tmp_path / "ds"
    ds.mkdir()
    Image.new("RGB", (64, 64), "red").save(ds / "0.png")
    model = ["--model", str(tiny_sd1)] if command == "finetune" else ["--config", str(ROOT / "configs/vae/emoji.yaml")]
    assert main([command, str(ds), *model, "--out", str(tmp_path / "run"), "--report-to", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'latentdiff[wandb]'" in err
    assert not (tmp_path / "run").exists()


def test_resume_trims_metrics_after_the_checkpoint_and_a_row_cut_by_a_kill(tmp_path):
    from latentdiff.training.trackers import RunLog

    rows = [json.dumps({"step": s, "loss": 0.5}) + "\n" for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(rows) + '{"step": 4, "lo')  # killed mid-write
    with RunLog(tmp_path, "none", {}, resumed_at=2) as log:
        log.log(3, {"loss": 0.25})
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and not list(tmp_path.glob("*.tmp"))
