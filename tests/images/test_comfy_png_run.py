"""`generate --from` a ComfyUI PNG whose graph starts from a picture or chains two samplers
(images/comfy_latent.py): the graph read into the run the API takes (comfy_graph=, checked against
ComfyUI's rules in tests/sampling/test_comfy_graph_run.py), the picture found beside the PNG or given
by --init-image, one line where it is missing; the result records its run and replays."""

import copy

import numpy as np
from helpers import COMFY_GRAPH, fails, generate, meta, pixels
from PIL import Image

from tests.images.test_comfy_png import comfy_png

LOAD = {"class_type": "LoadImage", "inputs": {"image": "photo.png", "upload": "image"}}


def inpaint_graph():
    """LoadImage -> VAEEncodeForInpaint (its alpha as the mask) -> KSampler -> VAEDecode."""
    g = copy.deepcopy(COMFY_GRAPH)
    g["10"] = LOAD
    g["11"] = {
        "class_type": "VAEEncodeForInpaint",
        "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["10", 1], "grow_mask_by": 4},
    }
    del g["5"]
    g["3"]["inputs"].update(latent_image=["11", 0], denoise=1)
    return g


def chained_graph():
    """The base + refiner graph on one model: steps 0-2 of 3 with leftover noise, then 2-end."""
    g = copy.deepcopy(COMFY_GRAPH)
    common = {k: v for k, v in g["3"]["inputs"].items() if k not in ("seed", "denoise")}
    g["5"]["inputs"]["batch_size"] = 1
    advanced = {"noise_seed": 3, "start_at_step": 0, "end_at_step": 10000}
    first = {**common, **advanced, "add_noise": "enable", "end_at_step": 2, "return_with_leftover_noise": "enable"}
    second = {**common, **advanced, "add_noise": "disable", "start_at_step": 2, "return_with_leftover_noise": "disable"}
    g["3"] = {"class_type": "KSamplerAdvanced", "inputs": first}
    g["12"] = {"class_type": "KSamplerAdvanced", "inputs": {**second, "latent_image": ["3", 0]}}
    g["8"]["inputs"]["samples"] = ["12", 0]
    return g


def photo(path):
    rgba = np.random.default_rng(1).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[8:40, 8:40, 3] = 0
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_an_inpainting_graph_runs_from_the_picture_beside_it_and_replays(tiny_sd1, pipe_sd1, tmp_path, capsys):
    picture = photo(tmp_path / "photo.png")
    png = comfy_png(tmp_path / "graph.png", inpaint_graph())
    (made,) = generate(capsys, "--from", png, "--model", tiny_sd1, "--out", tmp_path / "a")
    run = {
        "stages": [{"sampler": "euler", "scheduler": "normal", "steps": 3, "cfg": 8.0, "seed": 8566257}],
        "image": str(picture),
        "mask": [str(picture), "A"],
        "encoding": "inpaint",
        "grow_mask_by": 4,
    }
    (want,) = pipe_sd1("a red square", negative_prompt="bad hands", steps=3, guidance=8, seed=8566257,
                       scheduler="euler_normal", prompt_syntax="comfy", noise="comfy", comfy_graph=run)  # fmt: skip
    assert np.abs(pixels(made).astype(int) - np.asarray(want).astype(int)).max() <= 1
    assert meta(made)["comfy_graph"]["encoding"] == "inpaint"
    (again,) = generate(capsys, "--from", made, "--out", tmp_path / "b")
    assert np.array_equal(pixels(again), pixels(made))


def test_the_picture_must_be_found(tmp_path, tiny_sd1, capsys):
    png = comfy_png(tmp_path / "graph.png", inpaint_graph())
    err = fails(capsys, "--from", png, "--model", tiny_sd1)
    assert "loads picture 'photo.png': pass --init-image with it, or put it beside the PNG" in err
    other = photo(tmp_path / "elsewhere.png")
    (made,) = generate(capsys, "--from", png, "--model", tiny_sd1, "--init-image", other, "--out", tmp_path / "o")
    assert meta(made)["comfy_graph"]["image"] == str(other)


def test_two_chained_advanced_samplers_are_read_as_stages(tmp_path):
    from latentdiff.images.write import read_params

    params = read_params(comfy_png(tmp_path / "c.png", chained_graph()))
    first, second = params["comfy"]["run"]["stages"]
    assert (first["end"], first["leftover"], first["add_noise"]) == (2, True, True)
    assert (second["start"], second["add_noise"], second["leftover"]) == (2, False, False)
    assert (params["seed"], params["width"], params["num_images"]) == (3, 64, 1)


def test_chains_latentdiff_cannot_run_are_one_line(tmp_path, capsys):
    other_prompt = chained_graph()
    other_prompt["12"]["inputs"]["positive"] = ["7", 0]
    err = fails(capsys, "--from", comfy_png(tmp_path / "a.png", other_prompt), "--model", tmp_path)
    assert "chained samplers take different positive inputs" in err
    diffusers_sampler = chained_graph()
    diffusers_sampler["3"]["inputs"]["sampler_name"] = "uni_pc_bh2"
    err = fails(capsys, "--from", comfy_png(tmp_path / "b.png", diffusers_sampler), "--model", tmp_path)
    assert "on ComfyUI's own path for its samplers" in err
