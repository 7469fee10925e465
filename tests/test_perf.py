"""The speed settings keep their promises: bf16 (with channels_last) stays close to fp32, weights
load straight into the compute dtype, and the thread setting never leaks into the caller."""

import numpy as np
import pytest
import torch

from latentdiff import Pipeline
from latentdiff.models import load_components
from latentdiff.runtime import SMALL_UNET_PARAMS, torch_threads
from latentdiff.weights import parameter_count

# bf16 keeps 8 bits of mantissa; on the tiny model its 4-step images sit 47-53 dB from fp32
# (measured over pndm/euler_a/dpm++2m/ddim and three seeds; max pixel difference 3-7/255).
# 40 dB is visually identical; a broken cast or layout gives far less.
MIN_BF16_PSNR_DB = 40.0


def psnr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def pipe_bf16(tiny_sd1):
    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="bf16")
    p.progress = False
    return p


@pytest.mark.parametrize("scheduler,guidance", [("pndm", 7.5), ("euler_a", 1.0), ("dpm++2m", 4.0)])
def test_bf16_image_is_close_to_fp32(pipe_sd1, pipe_bf16, scheduler, guidance):
    ref = pipe_sd1("a red apple", steps=4, guidance=guidance, seed=3, num_images=2, scheduler=scheduler)
    low = pipe_bf16("a red apple", steps=4, guidance=guidance, seed=3, num_images=2, scheduler=scheduler)
    for a, b in zip(ref, low):
        assert np.asarray(a).std() > 5
        assert psnr(a, b) >= MIN_BF16_PSNR_DB
    assert low[0].info["latentdiff"]["dtype"] == "bf16"


def test_bf16_pipeline_runs_channels_last_in_bf16(pipe_bf16):
    pipe_bf16("a red apple", steps=2)  # layers pack their weights from their second call on
    c = pipe_bf16.components
    assert c.unet.dtype == c.vae.dtype == c.text_encoder.dtype == torch.bfloat16
    assert c.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert c.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert c.unet.conv_in.__dict__.get("_ld_packed") is not None, "bf16 UNet weights should be prepacked for oneDNN"


def test_prepacked_weights_give_the_same_image(tiny_sd1):
    from latentdiff.runtime import unpack_cpu_weights

    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="bf16")
    p.progress = False
    p("a red apple", steps=1, seed=5)  # each layer packs its weights from its second call on
    packed = p("a red apple", steps=3, seed=5)[0]
    unpack_cpu_weights(p.components.unet)
    assert not any("_ld_packed" in m.__dict__ for m in p.components.unet.modules())
    plain = p("a red apple", steps=3, seed=5)[0]
    assert psnr(packed, plain) >= 50  # convolutions are bit-identical; linears differ by bf16 rounding


def test_fp32_pipeline_keeps_the_default_layout(pipe_sd1):
    # fp32 on CPU gains nothing from channels_last and must stay bit-for-bit the parity path
    assert pipe_sd1.components.unet.conv_in.weight.is_contiguous()


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


def test_small_model_threads_are_restored(pipe_sd1):
    assert sum(p.numel() for p in pipe_sd1.components.unet.parameters()) < SMALL_UNET_PARAMS
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
