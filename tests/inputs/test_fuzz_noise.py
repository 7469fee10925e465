"""Fuzzing A1111's noise options (rng, variation_seed, variation_strength, seed_resize_from, ensd) at the
Python API, as flags and as the fields of an A1111 line read by --from: each case ends in images (or a
config) or in one line, a UsageError / LatentDiffError, never a traceback."""

import math

from helpers import one_line_or
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentdiff.config.generate import GenerateConfig
from latentdiff.config.params import flag_label
from latentdiff.images.infotext import params_from_a1111

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ODD = st.sampled_from(
    [
        True,
        None,
        "1",
        "",
        "NV",
        "gpu",
        "512x512",
        "0x0",
        "-1x-1",
        "8x8",
        "9x7",
        "99999999x1",
        b"1",
        [1],
        (64, 64),
        (0, 0),
        (-1, -1),
        (8, 7),
        [32.0, 48],
        {"a": 1},
        0,
        -1,
        1,
        31337,
        2**63,
        -(2**63),
        0.0,
        0.5,
        1.0,
        1.0000001,
        math.nan,
        math.inf,
        1e308,
    ]  # fmt: skip
)
VALID = {
    "rng": st.sampled_from(["cpu", "nv", "CPU"]),
    "variation_seed": st.integers(0, 2**40),
    "variation_strength": st.floats(0, 1),
    "seed_resize_from": st.sampled_from([None, (32, 32), "16x24", (0, 0)]),
    "ensd": st.integers(0, 2**40),
}


@settings(FUZZ, max_examples=40)
@given(data=st.data(), names=st.sets(st.sampled_from(sorted(VALID)), min_size=1), broken=st.booleans())
def test_fuzz_noise_arguments(pipe_sd1, data, names, broken):
    kw = {n: data.draw(ODD if broken else VALID[n], label=n) for n in names}
    sampler = data.draw(st.sampled_from(["euler_a", "dpm++2m_sde", "DPM++ 2S a", "ddim"]))
    one_line_or(lambda: pipe_sd1("x", steps=1, width=32, height=32, scheduler=sampler, **kw))


FIELDS = ["Variation seed", "Variation seed strength", "Seed resize from", "ENSD", "RNG"]


@settings(FUZZ, max_examples=200)
@given(
    values=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=12) | ODD.map(str), max_size=5),
    sampler=st.sampled_from(["Euler a", "DPM++ 2M SDE", "DDIM", "DPM++ 2S a"]),
)
def test_fuzz_a1111_noise_fields_through_from(values, sampler):
    extra = "".join(f"{k}: {v.replace(',', ' ').replace(chr(10), ' ')}, " for k, v in values.items())
    line = f"a cat\nSteps: 3, Sampler: {sampler}, CFG scale: 7, Seed: 1, Size: 64x64, {extra}Version: v1.10.1"
    params, _ = params_from_a1111(line)
    one_line_or(lambda: GenerateConfig.from_image(params, "the image"))


@settings(FUZZ, max_examples=150)
@given(values=st.dictionaries(st.sampled_from(sorted(VALID)), ODD | st.text(max_size=8), max_size=5))
def test_fuzz_noise_flags_config(values):
    one_line_or(lambda: GenerateConfig(prompts=["x"], noise=values))
    assert flag_label("seed_resize_from") == "--seed-resize-from"
