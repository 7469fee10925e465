"""The speed settings keep their promises: bf16 (with channels_last) stays close to fp32, weights
load straight into the compute dtype, and the thread setting never leaks into the caller."""

import numpy as np
import pytest
import torch

import latentdiff.runtime.device as runtime
import latentdiff.runtime.threads as threads
from latentdiff import Pipeline
from latentdiff.models.assemble import load_components
from latentdiff.models.weights import parameter_count
from latentdiff.runtime.device import CpuBf16, cpu_bf16
from latentdiff.runtime.threads import SMALL_UNET_PARAMS, torch_threads

# bf16 keeps 8 bits of mantissa; on the tiny model its 4-step images sit 47-53 dB from fp32
# (measured over pndm/euler_a/dpm++2m/ddim and three seeds; max pixel difference 3-7/255).
# 40 dB is visually identical; a broken cast or layout gives far less.
MIN_BF16_PSNR_DB = 40.0


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


needs_bf16 = pytest.mark.skipif(not cpu_bf16().runs, reason="torch cannot compute in bf16 on this CPU")
needs_prepack = pytest.mark.skipif(
    not cpu_bf16().prepack, reason=f"needs oneDNN's bf16 fast path; this CPU runs {cpu_bf16().describe()}"
)


@pytest.fixture(scope="module")
def pipe_bf16(tiny_sd1):
    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="bf16")
    p.progress = False
    return p


@needs_bf16
@pytest.mark.parametrize("scheduler,guidance", [("pndm", 7.5), ("euler_a", 1.0), ("dpm++2m", 4.0)])
def test_bf16_image_is_close_to_fp32(pipe_sd1, pipe_bf16, scheduler, guidance):
    ref = pipe_sd1("a red apple", steps=4, guidance=guidance, seed=3, num_images=2, scheduler=scheduler)
    low = pipe_bf16("a red apple", steps=4, guidance=guidance, seed=3, num_images=2, scheduler=scheduler)
    for a, b in zip(ref, low):
        assert np.asarray(a).std() > 5
        assert psnr(a, b) >= MIN_BF16_PSNR_DB
    assert low[0].info["latentdiff"]["dtype"] == "bf16"


@needs_bf16
def test_bf16_pipeline_runs_in_bf16(pipe_bf16):
    pipe_bf16("a red apple", steps=2)
    c = pipe_bf16.components
    assert c.unet.dtype == c.vae.dtype == c.text_encoder.dtype == torch.bfloat16


@needs_prepack
def test_bf16_pipeline_runs_channels_last_and_prepacked(pipe_bf16):
    pipe_bf16("a red apple", steps=2)  # layers pack their weights from their second call on
    c = pipe_bf16.components
    assert c.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert c.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert c.unet.conv_in.__dict__.get("_ld_packed") is not None, "bf16 UNet weights should be prepacked for oneDNN"


@needs_prepack
def test_prepacked_weights_give_the_same_image(tiny_sd1):
    from latentdiff.runtime.device import unpack_cpu_weights

    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="bf16")
    p.progress = False
    p("a red apple", steps=1, seed=5)  # each layer packs its weights from its second call on
    packed = p("a red apple", steps=3, seed=5)[0]
    unpack_cpu_weights(p.components.unet)
    assert not any("_ld_packed" in m.__dict__ for m in p.components.unet.modules())
    plain = p("a red apple", steps=3, seed=5)[0]
    assert psnr(packed, plain) >= 50  # convolutions are bit-identical; linears differ by bf16 rounding


def test_fp32_pipeline_keeps_the_default_layout_but_for_the_vae(pipe_sd1):
    # the fp32 UNet on CPU gains nothing from channels_last and stays bit-for-bit the parity path;
    # the VAE's decode gains (runtime.wants_channels_last_vae) with pixels within 1/255
    c = pipe_sd1.components
    assert c.unet.conv_in.weight.is_contiguous()
    assert c.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    fast = np.asarray(pipe_sd1("a red apple", steps=2, seed=0)[0], dtype=int)
    c.vae.to(memory_format=torch.contiguous_format)
    try:
        plain = np.asarray(pipe_sd1("a red apple", steps=2, seed=0)[0], dtype=int)
    finally:
        c.vae.to(memory_format=torch.channels_last)
    assert np.abs(fast - plain).max() <= 1


def test_weights_are_cast_while_loading(tiny_sd1):
    plain = load_components(tiny_sd1)
    cast = load_components(tiny_sd1, dtype=torch.bfloat16)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(plain, name).state_dict(), getattr(cast, name).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            if a[k].is_floating_point():
                assert b[k].dtype == torch.bfloat16 and torch.equal(b[k], a[k].to(torch.bfloat16)), k
            else:
                assert b[k].dtype == a[k].dtype and torch.equal(b[k], a[k]), k


def test_parameter_count_reads_the_header(tiny_sd1):
    unet = load_components(tiny_sd1).unet
    assert parameter_count(tiny_sd1 / "unet") == sum(p.numel() for p in unet.parameters())


def test_small_model_threads_are_restored(pipe_sd1, monkeypatch):
    assert sum(p.numel() for p in pipe_sd1.components.unet.parameters()) < SMALL_UNET_PARAMS
    monkeypatch.setattr(threads, "probe", lambda cap: threads.CpuState(2, 0.0))  # idle: 1 thread (test_threads.py)
    before = torch.get_num_threads()
    seen = []
    unet = pipe_sd1.components.unet
    handle = unet.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        pipe_sd1("a red apple", steps=2, seed=0)
    finally:
        handle.remove()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before


def test_thread_context_restores_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


# The CPU kinds this project runs on, as the probe reports them.
AMX = CpuBf16(runs=True, prepack=True, native=True)
AVX512_NO_BF16 = CpuBf16(runs=True, prepack=True, native=False)
AVX2 = CpuBf16(runs=True, prepack=False, native=False)  # e.g. the AMD EPYC: oneDNN refuses bf16 prepacking
NO_BF16 = CpuBf16(runs=False, prepack=False, native=False)
CPU = torch.device("cpu")


@pytest.fixture
def cpu_kind(monkeypatch):
    def use(kind: CpuBf16):
        monkeypatch.setattr(runtime, "cpu_bf16", lambda: kind)
        runtime.notice.cache_clear()

    yield use
    runtime.notice.cache_clear()


@pytest.mark.parametrize(
    "kind,asked,pref,dtype,fast",
    [
        (AMX, "bf16", None, torch.bfloat16, True),
        (AMX, "auto", None, torch.bfloat16, True),
        (AMX, "auto", "fp32", torch.float32, False),
        (AVX512_NO_BF16, "bf16", None, torch.bfloat16, True),
        (AVX512_NO_BF16, "auto", None, torch.float32, False),
        (AVX2, "bf16", None, torch.bfloat16, False),
        (AVX2, "auto", None, torch.float32, False),
        (AVX2, "auto", "bf16", torch.float32, False),  # a model's bf16 preference assumes native bf16
        (NO_BF16, "bf16", None, torch.float32, False),
    ],
)
def test_cpu_dtype_and_fast_path_decision(cpu_kind, capsys, kind, asked, pref, dtype, fast):
    cpu_kind(kind)
    assert runtime.resolve_dtype(asked, CPU, pref) == dtype
    assert runtime.wants_prepacked_weights(CPU, dtype) == runtime.wants_channels_last(CPU, dtype) == fast
    err = capsys.readouterr().err
    if asked == "bf16" and not kind.native:  # a fallback or a slow path is said, once
        assert err.count("latentdiff: ") == 1 and ("fp32" in err if not kind.runs else "bf16" in err)
        runtime.resolve_dtype(asked, CPU, pref)
        assert capsys.readouterr().err == ""
    else:
        assert err == ""


def test_no_prepacking_where_the_probe_fails(cpu_kind, tiny_sd1):
    cpu_kind(AVX2)
    unet = load_components(tiny_sd1, dtype=torch.bfloat16).unet
    assert runtime.prepack_cpu_weights(unet) == 0
    assert not any("_ld_packed" in m.__dict__ for m in unet.modules())


def test_probe_reports_failing_ops_as_unsupported(monkeypatch):
    def refuse(*a, **k):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse, raising=False)
    assert runtime._probe(runtime._probe_prepack) is False


@needs_bf16
@pytest.mark.parametrize("kind", [AVX2, AMX])
def test_bf16_training_says_what_it_costs_on_this_cpu(cpu_kind, capsys, kind, dataset, tiny_sd1, tmp_path):
    from helpers import cfg

    from latentdiff.training.loop import finetune

    cpu_kind(kind)
    finetune(cfg(dataset, tiny_sd1, tmp_path / "run", mixed_precision="bf16", max_steps=1))
    err = capsys.readouterr().err
    assert err.count("latentdiff: bf16 on this CPU") == (0 if kind.native else 1)
    assert kind.native or "plain bf16" in err and "slower than fp32" in err


def test_finetune_runs_with_its_num_threads_and_restores_the_callers(monkeypatch, tmp_path):
    from latentdiff.training import loop
    from latentdiff.training.config import FinetuneConfig

    seen = []
    monkeypatch.setattr(loop, "_finetune", lambda c, threads: seen.append(torch.get_num_threads()))
    with torch_threads(2):
        loop.finetune(FinetuneConfig(dataset=str(tmp_path), model="m", out=str(tmp_path / "o"), num_threads=1))
        assert seen == [1] and torch.get_num_threads() == 2
