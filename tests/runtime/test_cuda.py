"""CUDA: precision, compile, the NaN guard and fine-tuning on a GPU. Marked `gpu`: skipped with the
reason where torch sees no CUDA device; run with `python -m pytest -m gpu tests/runtime/test_cuda.py`."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image, ImageDraw

from latentdiff import Pipeline

pytestmark = pytest.mark.gpu
MIN_PSNR_DB = {"fp16": 40.0, "bf16": 35.0}  # vs the fp32 CUDA image of the same seed


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make(model, dtype, compile=False):
    p = Pipeline.from_pretrained(model, device="cuda", dtype=dtype, compile=compile)
    p.progress = False
    return p


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_is_close_to_fp32(tiny_sd1, dtype):
    ref = make(tiny_sd1, "fp32")("a red apple", steps=4, seed=3, num_images=2)
    low = make(tiny_sd1, dtype)("a red apple", steps=4, seed=3, num_images=2)
    for a, b in zip(ref, low):
        assert np.asarray(a).std() > 5 and psnr(a, b) >= MIN_PSNR_DB[dtype]
    assert low[0].info["latentdiff"]["dtype"] == dtype


@pytest.mark.parametrize("mode", ["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
def test_compiled_matches_eager(tiny_sd1, mode):
    eager = make(tiny_sd1, "fp16")("a red apple", steps=4, seed=1, num_images=2)
    pipe = make(tiny_sd1, "fp16", compile=mode)
    for _ in range(2):  # the second call replays (CUDA graphs: recorded on the first)
        compiled = pipe("a red apple", steps=4, seed=1, num_images=2)
    for a, b in zip(eager, compiled):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


@pytest.mark.parametrize("scheduler", ["dpm++2m", "pndm", "unipc"])
def test_cuda_graphs_keep_earlier_predictions_intact(tiny_sd1, scheduler):
    """fp32 and multistep schedulers: the loop and the scheduler keep earlier UNet outputs, which a
    CUDA graph's next replay would overwrite if they were not copied out."""
    eager = make(tiny_sd1, "fp32")("a red apple", steps=5, seed=2, scheduler=scheduler, guidance=1.0)[0]
    compiled = make(tiny_sd1, "fp32", compile="reduce-overhead")
    out = [compiled("a red apple", steps=5, seed=2, scheduler=scheduler, guidance=1.0)[0] for _ in range(2)]
    for img in out:
        assert np.abs(np.asarray(eager, dtype=int) - np.asarray(img, dtype=int)).max() <= 1


@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "euler", "dpm++2m"])
def test_sampling_loop_has_no_host_sync(tiny_sd1, scheduler):
    from latentdiff.families.clip import Embeddings
    from latentdiff.families.unet import UNetCall
    from latentdiff.sampling.loop import denoise, initial_noise, make_scheduler

    p = make(tiny_sd1, "fp16")
    c = p.components
    sched = make_scheduler(c.scheduler_config, scheduler)
    sched.set_timesteps(4)
    noise, gens = initial_noise((4, 8, 8), [0, 1])
    latents = (noise * sched.init_noise_sigma).cuda()
    hidden = torch.randn(2, 77, c.unet.config.cross_attention_dim, device="cuda")
    cond, uncond = Embeddings(hidden), Embeddings(torch.zeros_like(hidden))
    denoise(UNetCall(c.unet), sched, latents, cond, uncond, 5.0, gens)  # warm-up (cuDNN, allocator)
    sched.set_timesteps(4)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = denoise(UNetCall(c.unet), sched, latents, cond, uncond, 5.0, gens)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out).all()


def test_fp16_vae_is_tried_first_and_kept_in_fp32_after_an_overflow(tiny_sd1):
    p = make(tiny_sd1, "fp16")
    vae = p.components.vae
    assert vae.config.force_upcast, "the tiny model's VAE config asks for fp32 (diffusers' default)"
    assert vae.dtype == torch.float16, "on CUDA the VAE decodes in fp16 first all the same"
    clean = p("a red apple", steps=2, seed=0)[0]
    assert vae.dtype == torch.float16 and np.asarray(clean).std() > 1
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(6e4)
    with pytest.warns(UserWarning, match="keeping this VAE in fp32"):
        img = p("a red apple", steps=2, seed=0)[0]
    assert vae.dtype == torch.float32 and np.isfinite(np.asarray(img, dtype=float)).all()


def test_vae_overflow_is_redone_in_fp32(tiny_sd1):
    p = make(tiny_sd1, "fp16")
    vae = p.components.vae
    vae.config.force_upcast = False
    vae.to(torch.float16)
    with torch.no_grad():  # a weight so large that fp16 activations overflow to inf
        vae.decoder.conv_in.weight.mul_(6e4)
    with pytest.warns(UserWarning, match="redoing it in fp32"):
        img = p("a red apple", steps=2, seed=0)[0]
    assert np.isfinite(np.asarray(img, dtype=float)).all()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for i, c in enumerate(["red", "green", "blue", "yellow"]):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).ellipse((8, 8, 56, 56), fill=c)
        im.save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {c} circle")
    return root


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("precision", ["no", "fp16", "bf16"])
def test_finetune_and_resume_on_cuda(dataset, tiny_sd1, tmp_path, method, precision):
    out = tmp_path / "run"
    args = [
        "finetune",
        dataset,
        "--model",
        tiny_sd1,
        "--out",
        out,
        "--method",
        method,
        "--batch-size",
        "2",
        "--resolution",
        "64",
        "--checkpoint-every",
        "2",
        "--mixed-precision",
        precision,
    ]
    first = run_cli(*args, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_cli(*args, "--max-steps", "4", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4 and all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
    image = make(out, "fp16")("a red circle", steps=2, seed=0)[0]
    assert np.asarray(image).std() > 1


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_compile_on_cuda(dataset, tiny_sd1, tmp_path, method):
    out = tmp_path / "run"
    r = run_cli(
        "finetune",
        dataset,
        "--model",
        tiny_sd1,
        "--out",
        out,
        "--method",
        method,
        "--batch-size",
        "2",
        "--resolution",
        "64",
        "--max-steps",
        "3",
        "--mixed-precision",
        "bf16",
        "--compile",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3 and all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_on_cuda_matches_uninterrupted(dataset, tiny_sd1, tmp_path, method, monkeypatch):
    """fused AdamW (CUDA) state survives a checkpoint: a resumed run ends where a straight one does."""
    from safetensors.torch import load_file

    from latentdiff.training import checkpoint as ckpt
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    base = dict(
        dataset=str(dataset),
        model=str(tiny_sd1),
        method=method,
        max_steps=4,
        batch_size=2,
        resolution=64,
        lr=1e-3,
        checkpoint_every=2,
        log_every=1,
        seed=1,
        mixed_precision="fp16",
    )
    finetune(FinetuneConfig(out=str(tmp_path / "straight"), **base))
    finetune(FinetuneConfig(out=str(tmp_path / "resumed"), **{**base, "max_steps": 2}))
    finetune(FinetuneConfig(out=str(tmp_path / "resumed"), resume=True, **base))
    a, b = (
        load_file(str(ckpt.latest_checkpoint(tmp_path / d) / "trainable.safetensors")) for d in ("straight", "resumed")
    )
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_gives_the_same_pixels_in_less_gpu_memory(tiny_klein, mode):
    """--offload keeps only the working component (model) or layer (sequential) on the GPU."""
    images, peaks = [], []
    for offload in ("none", mode):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        p = Pipeline.from_pretrained(tiny_klein, device="cuda", dtype="fp32", offload=offload)
        p.progress = False
        images.append(np.asarray(p("a red apple", steps=2, width=32, height=32, seed=1)[0]))
        peaks.append(torch.cuda.max_memory_allocated())
        del p
    assert np.array_equal(*images)
    assert peaks[1] < peaks[0]


def test_flux_family_auto_dtype_is_bf16_on_a_gpu_that_computes_it(tiny_klein):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    assert make(tiny_klein, "auto").dtype == torch.bfloat16
