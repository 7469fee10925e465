"""`--speed`: the lever rule as a table (every CPU kind, whether or not this machine is one), and each
lever this CPU can run keeping a tiny model's image within its stated PSNR of the fp32 image."""

import os

import numpy as np
import pytest
import torch

from latentdiff import Pipeline, UsageError
from latentdiff.runtime.device import cpu_bf16
from latentdiff.runtime.int8 import is_quantized, quantize_weights
from latentdiff.runtime.levers import (
    COMPILE_PAYS_AFTER,
    MANY_CALLS,
    STATED_PSNR,
    CpuFeatures,
    choose_levers,
    cpu_features,
    parse_speed,
    psnr,
)
from latentdiff.runtime.memory import major_faults, pin_weights

AMX = CpuFeatures.from_flags("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8".split())
ZEN4 = CpuFeatures.from_flags("avx2 avx512f avx512_vnni avx512_bf16".split())
SKYLAKE = CpuFeatures.from_flags("avx2 avx512f".split())
CASCADE = CpuFeatures.from_flags("avx2 avx512f avx512_vnni".split())
EPYC = CpuFeatures.from_flags("fma avx avx2".split())
SMALL, LARGE = 9_000_000, 860_000_000  # the shipped model's UNet, SD1.5's

TABLE = [  # cpu, UNet parameters, expected UNet image-steps -> levers
    (AMX, LARGE, 20, ["bf16"]),
    (AMX, LARGE, 40, ["bf16", "compile"]),
    (AMX, LARGE, None, ["bf16"]),
    (AMX, SMALL, 20, []),
    (AMX, SMALL, MANY_CALLS, ["compile"]),
    (ZEN4, LARGE, MANY_CALLS, ["bf16", "compile"]),
    (SKYLAKE, LARGE, 20, []),  # bf16 emulated: slower than fp32
    (SKYLAKE, LARGE, 400, ["compile"]),
    (CASCADE, LARGE, 399, []),
    (EPYC, LARGE, 20, []),
    (EPYC, LARGE, MANY_CALLS, ["compile"]),
    (EPYC, SMALL, 2999, []),
    (EPYC, SMALL, 3000, ["compile"]),
    (CpuFeatures(), LARGE, 20, []),
]


@pytest.mark.parametrize("cpu, params, calls, names", TABLE)
def test_lever_choice_table(cpu, params, calls, names):
    levers = choose_levers(cpu, params, calls)
    assert levers.names == names
    assert not levers.int8 and not levers.channels_last  # opt-in / measured no faster on any CPU here


def test_cpu_kinds_from_flags_and_this_machine(tmp_path):
    assert [c.kind for c in (AMX, ZEN4, CASCADE, SKYLAKE, EPYC, CpuFeatures())] == [
        "amx",
        "avx512-bf16",
        "avx512-vnni",
        "avx512",
        "avx2",
        "baseline",
    ]
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu_features(str(info)) == CpuFeatures(avx512_bf16=True, avx512=True, avx2=True)
    assert cpu_features(str(tmp_path / "none")).kind in ("avx512", "avx2", "baseline")  # torch's capability
    assert set(COMPILE_PAYS_AFTER) == {(b, large) for b in (True, False) for large in (True, False)}


def test_speed_values_and_refusals():
    assert parse_speed("off").off and parse_speed(None).off and parse_speed("auto").auto
    assert parse_speed(" Auto , INT8 ").text == "auto,int8"
    assert parse_speed("compile,channels_last").text == "channels-last,compile"
    for bad, words in (
        ("fast", "unknown speed"),
        ("off,int8", "unknown speed"),
        ("bf16", "--dtype bf16"),
        (3, "speed"),
    ):
        with pytest.raises(UsageError, match=words):
            parse_speed(bad)


def _image(tiny, **kw):
    pipe = Pipeline.from_pretrained(tiny, device="cpu", **kw)
    pipe.progress = False
    return np.asarray(pipe("a red apple", steps=3, seed=1, width=32, height=32)[0]), pipe


@pytest.fixture(scope="module")
def fp32_image(tiny_sd1):
    return _image(tiny_sd1, dtype="fp32")[0]


RUNS = {  # lever -> how a pipeline runs with it alone
    "channels-last": dict(dtype="fp32", speed="channels-last"),
    "int8": dict(dtype="fp32", speed="int8"),
    "bf16": dict(dtype="bf16"),
    "auto": dict(dtype="auto", speed="auto", calls=100),  # a run's worth: compiling never pays for a tiny UNet
}


@pytest.mark.parametrize("lever", sorted(RUNS))
def test_each_lever_keeps_its_stated_psnr(tiny_sd1, fp32_image, lever):
    if lever == "bf16" and not cpu_bf16().runs:
        pytest.skip("this CPU computes no bf16 at all (the choice is pinned by the table test)")
    image, pipe = _image(tiny_sd1, **RUNS[lever])
    stated = min([STATED_PSNR[n] for n in pipe.levers.names] or [float("inf")])
    assert psnr(image, fp32_image) >= stated, (lever, pipe.levers, psnr(image, fp32_image))
    assert (lever in pipe.levers.names) or lever == "auto"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LATENTDIFF_TEST_COMPILE"),
    reason="inductor compiles the tiny UNet and VAE for minutes on a busy 2-core CPU; LATENTDIFF_TEST_COMPILE=1 runs it "
    "(the choice is pinned by the table test; benchmarks/cpu_levers.py --compile measures the real models)",
)
def test_compile_lever_keeps_its_stated_psnr(tiny_sd1, fp32_image):
    image, pipe = _image(tiny_sd1, dtype="fp32", speed="compile")
    assert pipe.compiled and psnr(image, fp32_image) >= STATED_PSNR["compile"]


def test_levers_are_recorded_and_int8_refuses_save_and_lora_tags(tiny_sd1, tmp_path, generate):
    code, out, err = generate(tiny_sd1, tmp_path, "--speed", "int8", "--width", "32", "--height", "32")
    assert code == 0, err
    from latentdiff.config.generate import GenerateConfig
    from latentdiff.images.write import read_params

    params = read_params(out.split()[0])
    assert params["speed"] == "int8" and params["levers"] == ["int8"]
    assert GenerateConfig.from_image(params).speed == "int8"  # --from replays it
    assert GenerateConfig.from_image({**params, "speed": None}).speed == "off"  # an image from before --speed
    _, pipe = _image(tiny_sd1, dtype="fp32", speed="int8")
    assert is_quantized(pipe.components.unet)
    with pytest.raises(UsageError, match="int8"):
        pipe.save_pretrained(tmp_path / "saved")
    from latentdiff.formats.lora_tags import merged

    with pytest.raises(UsageError, match="LoRAs cannot be merged"), merged(pipe.components, ["a tag's LoRA"]):
        pass
    for calls in (-1, "many", 2.5, True):
        with pytest.raises(UsageError, match="calls must be"):
            pipe.speed_up("auto", calls)
    code, _, err = generate(tiny_sd1, tmp_path, "--speed", "turbo")
    assert code == 2 and "unknown speed" in err and "Traceback" not in err


def test_int8_weights_are_a_quarter_and_close():
    layer = torch.nn.Linear(128, 64)
    x = torch.randn(4, 128)
    want = layer(x)
    assert quantize_weights(torch.nn.Sequential(layer)) == 1
    assert layer.weight_int8.dtype == torch.int8 and "weight" not in dict(layer.named_parameters())
    assert (layer(x) - want).abs().max() < 0.02 * want.abs().max()


def test_pinned_weights_leave_the_file_mapping_and_the_image_unchanged(tiny_sd1, fp32_image):
    _, pipe = _image(tiny_sd1, dtype="fp32")
    c = pipe.components
    copied = pin_weights(c.unet, c.vae, *c.text_encoders())
    assert copied > 0 and pin_weights(c.unet, c.vae, *c.text_encoders()) == 0  # nothing left borrowed
    assert np.array_equal(np.asarray(pipe("a red apple", steps=3, seed=1, width=32, height=32)[0]), fp32_image)
    assert major_faults() is None or major_faults() >= 0


def test_serve_takes_speed_and_pin_weights_and_refuses_a_bad_speed():
    from latentdiff.server.config import ServeConfig

    cfg = ServeConfig(speed="Auto", pin_weights=True)
    assert cfg.speed == "auto" and cfg.parts(None)["calls"] == MANY_CALLS and cfg.parts(None)["speed"] == "auto"
    with pytest.raises(UsageError, match="unknown speed"):
        ServeConfig(speed="warp")


SD_VAE = {"block_out_channels": [128, 256, 512, 512]}


def test_vae_tiles_only_when_the_whole_decode_does_not_fit(pipe_sd1, monkeypatch):
    from latentdiff.runtime.memory import decode_bytes, decode_tile
    from latentdiff.workflows import decode

    whole = decode_bytes(SD_VAE, 1, 512, 512, 4)
    assert decode_tile(SD_VAE, 1, 64, 64, 8, 4, None) is None and decode_tile(SD_VAE, 1, 64, 64, 8, 4, whole) is None
    assert decode_tile(SD_VAE, 1, 64, 64, 8, 4, whole // 3) == 32  # a quarter of the pixels fits
    assert decode_tile(SD_VAE, 1, 64, 64, 8, 4, 1) == 16  # the smallest tile, whatever the memory
    latents = torch.randn(1, 4, 40, 40, generator=torch.Generator().manual_seed(0))
    plain = pipe_sd1.decode(latents)
    monkeypatch.setattr(decode, "available_bytes", lambda device: 1)  # no memory free: tiles
    tiled = pipe_sd1.decode(latents)
    assert tiled.shape == plain.shape and (tiled - plain).abs().max() < 0.5  # blended windows: close, not equal
    assert not torch.equal(tiled, plain)
