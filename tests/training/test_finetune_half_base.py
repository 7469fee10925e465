"""Fine-tuning a base model stored in fp16 (as the shipped model is) at every mixed precision the
device allows: trainable weights fp32, frozen weights in the compute dtype, exact resume."""

import numpy as np
import pytest
import torch
from helpers import killed_after_first_checkpoint
from safetensors.torch import load_file

from latentdiff import Pipeline, UsageError
from latentdiff.runtime.device import cpu_bf16
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.loop import finetune

PRECISIONS = [
    "no",
    pytest.param(
        "bf16",
        marks=pytest.mark.skipif(
            not cpu_bf16().runs and not torch.cuda.is_available(), reason="torch cannot compute in bf16 here"
        ),
    ),
    pytest.param("fp16", marks=pytest.mark.gpu),
]


@pytest.fixture(scope="module")
def tiny_half(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "sd1-fp16", "sd1", half=True)


def cfg(dataset, model, out, **kw):
    base = dict(
        dataset=str(dataset),
        model=str(model),
        out=str(out),
        max_steps=2,
        batch_size=2,
        resolution=64,
        lr=1e-3,
        checkpoint_every=1,
        log_every=1,
        seed=1,
        ema_decay=None,
    )
    return FinetuneConfig(**{**base, **kw})


def test_the_base_is_really_stored_in_fp16(tiny_half):
    stored = load_file(str(tiny_half / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("method", ["lora", "full"])
def test_trains_and_the_result_generates(dataset, tiny_half, tmp_path, method, precision):  # noqa: F811
    out = finetune(cfg(dataset, tiny_half, tmp_path / "run", method=method, mixed_precision=precision))
    first = load_file(str(ckpt.complete_checkpoints(out)[0] / "trainable.safetensors"))
    last = load_file(str(ckpt.latest_checkpoint(out) / "trainable.safetensors"))
    assert {t.dtype for t in last.values()} == {torch.float32}, "trainable weights stay fp32"
    assert all(torch.isfinite(t).all() for t in last.values())
    assert any(not torch.equal(first[k], last[k]) for k in last), "the second step changed the weights"
    pipe = Pipeline.from_pretrained(out, device="cpu", dtype="fp32")
    pipe.progress = False
    pixels = np.asarray(pipe("a red circle", steps=2, seed=0)[0])
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0


def test_frozen_weights_take_the_compute_dtype_and_trainable_stay_fp32(
    dataset,
    tiny_half,
    tmp_path,  # noqa: F811
    monkeypatch,
):
    """Without mixed precision the frozen fp16 base weights must become fp32 (the computation's dtype):
    left in fp16 they met fp32 activations and failed with 'mat1 and mat2 must have the same dtype'."""
    import latentdiff.training.loop as loop

    seen = {}
    real = loop._train

    def look(cfg, out, acc, state, *rest):
        unet = state.setup.components.unet
        seen["frozen"] = {p.dtype for p in unet.parameters() if not p.requires_grad}
        seen["trained"] = {p.dtype for p in unet.parameters() if p.requires_grad}
        seen["vae"] = {p.dtype for p in state.setup.components.vae.parameters()}
        return real(cfg, out, acc, state, *rest)

    monkeypatch.setattr(loop, "_train", look)
    finetune(cfg(dataset, tiny_half, tmp_path / "run", method="lora", max_steps=1))
    assert seen == {"frozen": {torch.float32}, "trained": {torch.float32}, "vae": {torch.float32}}


def test_lora_on_an_fp16_base_resumes_exactly(dataset, tiny_half, tmp_path, monkeypatch):  # noqa: F811
    straight = finetune(cfg(dataset, tiny_half, tmp_path / "straight", max_steps=3))
    killed_after_first_checkpoint(
        lambda: finetune(cfg(dataset, tiny_half, tmp_path / "resumed", max_steps=3)), monkeypatch
    )
    resumed = finetune(cfg(dataset, tiny_half, tmp_path / "resumed", max_steps=3, resume=True))
    a, b = (load_file(str(ckpt.latest_checkpoint(o) / "trainable.safetensors")) for o in (straight, resumed))
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_fp16_mixed_precision_on_the_cpu_is_one_line(dataset, tiny_half, tmp_path):  # noqa: F811
    with pytest.raises(UsageError, match="--mixed-precision fp16 needs a CUDA GPU") as e:
        finetune(cfg(dataset, tiny_half, tmp_path / "run", mixed_precision="fp16"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists(), "refused before anything is written"


def test_the_cpu_bf16_note_names_finetunes_own_flag(dataset, tiny_half, tmp_path, monkeypatch, capsys):  # noqa: F811
    """On a CPU without bf16 kernels the note says how to get fp32 with finetune's flag, not generate's."""
    import latentdiff.runtime.device as runtime
    import latentdiff.training.start as start

    monkeypatch.setattr(runtime, "cpu_bf16", lambda: runtime.CpuBf16(runs=True, prepack=False, native=False))
    monkeypatch.setattr(start, "_release_precision", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    runtime.notice.cache_clear()
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg(dataset, tiny_half, tmp_path / "run", mixed_precision="bf16"))
    err = capsys.readouterr().err
    assert "slower than fp32: --mixed-precision no" in err and "--dtype" not in err


@pytest.mark.slow
def test_the_readmes_cpu_recipe_runs_on_the_shipped_model(tmp_path):
    """The CPU recipe of docs/finetuning.md as written, at 3 steps: the shipped fp16 model (where LoRA once ended in
    'mat1 and mat2 must have the same dtype'), the example dataset, its kohya file named after the run,
    then generate with the result."""
    from pathlib import Path

    from conftest import run_cli

    from latentdiff.models.hub import DEFAULT_MODEL_DIR

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "zorb"
    r = run_cli(
        "finetune",
        "examples/zorb",
        "--model",
        DEFAULT_MODEL_DIR,
        "--out",
        out,
        "--config",
        "configs/finetune/emoji-lora.yaml",
        "--max-steps",
        3,
        "--validate-every",
        3,
        cwd=root,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(out)
    assert "Traceback" not in r.stderr and "dataset: 8 image(s)" in r.stderr
    assert (out / "zorb.safetensors").is_file() and len(list((out / "samples").glob("*.png"))) == 2
    r = run_cli("generate", "a zorb", "--model", out, "--steps", 2, "--out", tmp_path / "images", cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
