"""Fuzzing ComfyUI's picture and chained-sampler graphs (images/comfy_latent.py) and the `comfy_graph`
run the API takes (workflows/comfy_start.ComfyRun): nodes dropped, retyped or given junk inputs, stage
dicts of any values. Each ends in a checked run or one UsageError line; no model is loaded."""

import copy
import io
import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from latentdiff.errors import UsageError
from latentdiff.images.comfy_graph import params_from_comfy
from latentdiff.workflows import comfy_start
from latentdiff.workflows.comfy_start import ComfyRun
from tests.images.test_comfy_png_run import chained_graph, inpaint_graph
from tests.inputs.test_fuzz_files import _COMFY_JUNK, FUZZ, damaged, one_line
from tests.sampling.test_comfy_graph_more import chain_of
from tests.sampling.test_comfy_inpaint_model import model_graph
from tests.sampling.test_comfy_refiner import refiner_graph

JUNK = _COMFY_JUNK | st.sampled_from(["enable", "disable", "A", "alpha", "karras", "euler_ancestral", 1.5, 64, 10_001])
# ComfyUI's sampler and scheduler names (those added later too: heunpp2, gradient estimation, SEEDS)
SAMPLER_NAMES = ["euler", "dpmpp_2m", "ddim", "heunpp2", "gradient_estimation", "gradient_estimation_cfg_pp"]
SAMPLER_NAMES += ["seeds_2", "seeds_3"]
KINDS = ["LoadImage", "LoadImageMask", "VAEEncode", "VAEEncodeForInpaint", "SetLatentNoiseMask", "KSamplerAdvanced"]
KINDS += ["InpaintModelConditioning"]


@st.composite
def picture_graph(draw) -> dict:
    graph = copy.deepcopy(
        draw(
            st.sampled_from(
                [inpaint_graph(), chained_graph(), chain_of(3), model_graph(), model_graph(False), refiner_graph()]
            )
        )
    )
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(graph)))
        action = draw(st.sampled_from(["retype", "input", "input", "drop"]))
        if action == "drop":
            graph.pop(key)
        elif action == "retype":
            graph[key]["class_type"] = draw(st.sampled_from(KINDS))
        else:
            name = draw(
                st.sampled_from(
                    sorted(graph[key]["inputs"])
                    + ["mask", "pixels", "latent_image", "channel", "positive", "noise_mask"]
                )
            )
            graph[key]["inputs"][name] = draw(
                JUNK | st.sampled_from([*SAMPLER_NAMES, ["11", 2], ["11", 1], ["20", 0], ["20", 2], False])
            )
    return graph


def checked_or_one_line(run) -> None:
    try:
        ComfyRun.checked(run)
    except UsageError as e:
        one_line(e)


@settings(FUZZ, max_examples=150)
@given(graph=picture_graph())
def test_fuzz_picture_and_chained_graphs(graph):
    try:
        run = params_from_comfy(json.loads(json.dumps(graph)), "graph")["comfy"]["run"]
    except UsageError as e:
        one_line(e)
        return
    if run is not None:  # its stages checked as the API checks them (the pictures are found later)
        checked_or_one_line({"stages": run["stages"]})


STAGE = st.fixed_dictionaries(
    {
        "sampler": st.sampled_from([*SAMPLER_NAMES, 3]),
        "scheduler": st.sampled_from(["normal", "kl_optimal", "linear_quadratic", "x"]),
    },
    optional={
        k: JUNK
        for k in ("steps", "cfg", "seed", "denoise", "add_noise", "start", "end", "leftover", "refiner", "other")
    },
)


@settings(FUZZ, max_examples=150)
@given(
    run=st.fixed_dictionaries(
        {"stages": st.lists(STAGE, max_size=4) | JUNK},
        optional={
            "image": JUNK,
            "mask": JUNK | st.just(["x.png", "A"]),
            "encoding": JUNK | st.just("model"),
            "grow_mask_by": JUNK,
            "noise_mask": JUNK,
        },
    )
    | JUNK
)
def test_fuzz_comfy_graph_runs(run):
    checked_or_one_line(run)


def picture_bytes(mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (12, 10)).save(buf, format="PNG")
    return buf.getvalue()


@settings(FUZZ, max_examples=100)
@given(
    data=st.data(),
    mode=st.sampled_from(["RGB", "RGBA", "LA", "L", "P", "I;16"]),
    channel=st.sampled_from(["A", "R", "G", "B"]),
)
def test_fuzz_picture_files(data, mode, channel):
    """A graph's picture and mask file (LoadImage, LoadImageMask), damaged or not: pixels and a mask, or one line."""
    raw = damaged(data.draw, picture_bytes(mode), data.draw(st.sampled_from([None, "truncate", "flip"])))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.png"
        path.write_bytes(raw)
        try:
            image, m = comfy_start.pixels(path), comfy_start.mask(path, channel)
        except UsageError as e:
            one_line(e)
            return
        assert image.shape[-1] == 3 and 0 <= float(image.min()) and float(image.max()) <= 1 and m.ndim == 3
