"""Issue 24's fuzzing of the Python API (hypothesis, derandomized), each case inside a memory cap so
a blow-up fails the test instead of the machine: bools where numbers go, wrong element types and
numbers at and past their bounds in call, from_pretrained and save_pretrained arguments, special
files where a file belongs. Every case ends in images (or a saved model) or in one line, a
UsageError / LatentDiffError. Model files are fuzzed in test_fuzz_models.py; flags, --from and
configs with random JSON in test_fuzz.py."""

import contextlib
import math
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from helpers import memory_cap, one_line_or
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from latentdiff import Pipeline
from latentdiff.errors import LatentDiffError
from latentdiff.formats.lora import LoraSpec

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
PICTURE = Image.new("RGB", (16, 16), "red")


@pytest.fixture(autouse=True)
def _bounded_memory():
    """A fixed 2 GiB "available" (so the estimates, not the machine, decide) and a 3 GiB cap on
    what the process may allocate beyond what it holds."""
    with mock.patch("latentdiff.runtime.memory.available_bytes", lambda device: 2 * 2**30), memory_cap(3 * 2**30):
        yield


# ---- the Python API -----------------------------------------------------------------------------------

NOT_NUMBERS = st.sampled_from([True, False, None, "1", "", "0.5", b"1", [1], (1,), {"a": 1}, 1j, object()])
ODD_NUMBERS = st.sampled_from([0, -1, 1, 2, 7, 8, 9, 64, 255, 256, 257, 16384, 16385, 10**6, 2**63, -(2**63)])
ODD_REALS = st.sampled_from([0.0, -0.0, 1e-9, 0.5, 1.0, 1.0000001, 1.5, 8.0, 8.5, math.nan, math.inf, -math.inf, 1e308])
ANY_VALUE = NOT_NUMBERS | ODD_NUMBERS | ODD_REALS
BORDERS = st.lists(ODD_NUMBERS | ODD_REALS | NOT_NUMBERS, min_size=3, max_size=5) | st.sampled_from(
    ["8,0,0,8", "1.5,0,0,0", "8,0,0", "-1,0,0,8", "99999999999999,0,0,0", "0,0,0,0", "٣,0,0,0", "", 8]
)
CALL_OPTIONS = {
    "strength": ANY_VALUE,
    "hires": ANY_VALUE,
    "hires_strength": ANY_VALUE,
    "hires_steps": ANY_VALUE,
    "mask_blur": ANY_VALUE,
    "padding": ANY_VALUE,
    "inpaint_area": ANY_VALUE | st.sampled_from(["full", "whole", "masked", "Masked"]),
    "hires_upscaler": ANY_VALUE | st.sampled_from(["none", "lanczos", "nearest", "Nearest", "x.pth", "/dev/null.pth"]),
    "masked_content": ANY_VALUE | st.sampled_from(["original", "fill", "latent_noise", "latent_nothing", "Fill"]),
    "rng": st.sampled_from(["cpu", "nv"]),  # A1111's own path, its inpainting among others
    # A1111's UniPC settings (its own path: with rng, and only for its UniPC)
    "uni_pc_variant": ANY_VALUE | st.sampled_from(["bh1", "bh2", "vary_coeff", "BH2"]),
    "uni_pc_skip_type": ANY_VALUE | st.sampled_from(["time_uniform", "time_quadratic", "logSNR", "logsnr"]),
    "uni_pc_order": ANY_VALUE,
    "uni_pc_lower_order_final": ANY_VALUE,
    "hires_refiner_pass": ANY_VALUE | st.sampled_from(["second", "first", "both", "first pass"]),
    "tile": ANY_VALUE,
    "upscale": ANY_VALUE,
    "outpaint": BORDERS,
    "callback": ANY_VALUE | st.just(lambda step, total, latents: None),
    "clip_skip": ANY_VALUE,
    "steps": ANY_VALUE,
    "guidance": ANY_VALUE,
    "num_images": ANY_VALUE,
    "seed": ANY_VALUE,
}


@settings(FUZZ, max_examples=150)
@given(
    data=st.data(),
    names=st.sets(st.sampled_from(sorted(CALL_OPTIONS)), min_size=1, max_size=3),
    start=st.sampled_from([None, "image", "mask"]),
)
def test_fuzz_call_arguments_bools_types_and_bounds(pipe_sd1, data, names, start):
    kwargs = {"steps": 1, "width": 16, "height": 16}
    if start:
        kwargs["image"] = PICTURE
    if start == "mask":
        kwargs["mask"] = PICTURE
    kwargs.update({name: data.draw(CALL_OPTIONS[name], label=name) for name in sorted(names)})
    if "hires" in names:
        kwargs.pop("width"), kwargs.pop("height")
    images = one_line_or(lambda: pipe_sd1("x", **kwargs))
    for name in ("strength", "hires_strength", "guidance", "hires", "steps", "num_images", "mask_blur", "padding"):
        if images is not None and name in names:  # accepted: then it was a real number, never a bool
            assert kwargs[name] is None or not isinstance(kwargs[name], bool), (name, kwargs[name])
    if images is not None and "outpaint" in names and kwargs.get("outpaint") is not None:
        assert all(
            isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) or float(v).is_integer()
            for v in (kwargs["outpaint"].split(",") if isinstance(kwargs["outpaint"], str) else kwargs["outpaint"])
        )


def _fifo(folder: Path) -> str:
    path = folder / "fifo.safetensors"
    if not path.exists():
        os.mkfifo(path)
    return str(path)


@settings(FUZZ, max_examples=80)
@given(
    data=st.data(),
    name=st.sampled_from(["loras", "embeddings", "text_encoders", "vae", "components", "save_out", "save_dtype"]),
)
def test_fuzz_file_arguments_wrong_types_and_special_files(pipe_sd1, tiny_sd1, data, name):
    """Every value here is wrong: a UsageError (or ModelError) of one line, never a TypeError or a hang."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # relative paths land in tmp
        tmp = Path(tmp)
        special = st.sampled_from([_fifo(tmp), "/dev/zero", "/dev/null", str(tmp), str(tmp / "missing.pt")])
        item = (
            NOT_NUMBERS
            | ODD_NUMBERS
            | special
            | st.builds(lambda p, s: f"{p}:{s}", special, st.sampled_from(["nan", "inf", "1e9", "-1e3"]))
        )
        specs = st.builds(
            LoraSpec, st.sampled_from([5, None, b"x", str(tmp)]), st.sampled_from([1.0, math.nan, True, "1"])
        )
        if name in ("loras", "embeddings", "text_encoders"):
            value = data.draw(
                st.lists(item | specs, min_size=1, max_size=3)
                | NOT_NUMBERS.filter(lambda v: not isinstance(v, (list, tuple)))
            )
            fn = lambda: Pipeline.from_pretrained(tiny_sd1, device="cpu", **{name: value})  # noqa: E731
        elif name in ("vae", "components"):  # --components: for a transformer file, and tiny_sd1 is a folder
            value = data.draw(NOT_NUMBERS.filter(lambda v: v is not None) | st.sampled_from([_fifo(tmp), "/dev/zero"]))
            fn = lambda: Pipeline.from_pretrained(tiny_sd1, device="cpu", **{name: value})  # noqa: E731
        else:
            out, dtype = tmp / "out", None
            if name == "save_out":
                out = data.draw(
                    NOT_NUMBERS.filter(lambda v: not isinstance(v, str))  # "1" is a fine folder name
                    | st.sampled_from([str(tiny_sd1), str(tiny_sd1 / "unet"), "/dev/null", "a\0b", "", " "])
                )
            else:
                dtype = data.draw(NOT_NUMBERS.filter(lambda v: v is not None) | st.sampled_from(["fp8", "FP64", " "]))
            fn = lambda: pipe_sd1.save_pretrained(out, dtype=dtype)  # noqa: E731
        before = sorted(p.name for p in tiny_sd1.rglob("*"))
        with pytest.raises(LatentDiffError) as e:
            fn()
        assert str(e.value) and "\n" not in str(e.value)
        assert sorted(p.name for p in tiny_sd1.rglob("*")) == before
