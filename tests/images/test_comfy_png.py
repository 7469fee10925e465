"""`generate --from` a ComfyUI PNG: the API graph ComfyUI's SaveImage embeds ("prompt"), regenerated
with ComfyUI's noise (one torch.randn for the batch latent from torch.manual_seed(seed)), checked
against diffusers' pipeline given that noise on the same tiny weights; our own result replays; what
the graph asks that latentdiff cannot do is one line, exit 2."""

import copy
import json

import numpy as np
import pytest
import torch
from helpers import COMFY_GRAPH as GRAPH
from helpers import fails, generate, kohya_file, max_pixel_diff, meta, pixels
from PIL import Image, PngImagePlugin


def comfy_png(path, graph, workflow=True):
    """A PNG as ComfyUI's SaveImage writes it: the API graph as "prompt", the UI graph as "workflow"."""
    info = PngImagePlugin.PngInfo()
    if graph is not None:
        info.add_text("prompt", graph if isinstance(graph, str) else json.dumps(graph))
    if workflow:
        info.add_text("workflow", json.dumps({"nodes": [], "links": []}))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def changed(**nodes):
    """GRAPH with nodes replaced or added ({id: node or a function of the node})."""
    g = copy.deepcopy(GRAPH)
    for key, node in nodes.items():
        g[key] = node(g[key]) if callable(node) else node
    return g


def with_inputs(node, **inputs):
    return {**node, "inputs": {**node["inputs"], **inputs}}


@pytest.fixture(scope="module")
def made(tiny_sd1, tmp_path_factory):
    """The default graph's batch of 2 regenerated, through the CLI."""
    from latentdiff.cli.main import main

    tmp = tmp_path_factory.mktemp("comfy")
    png = comfy_png(tmp / "comfy.png", GRAPH)
    assert main(["generate", "--from", str(png), "--model", str(tiny_sd1), "--out", str(tmp / "out"), "--quiet"]) == 0
    return sorted((tmp / "out").iterdir())


def test_regenerates_comfyuis_pixels(made, pipe_sd1):
    """Equal to ComfyUI's KSampler (euler, normal) rebuilt with k-diffusion from ComfyUI's noise of the
    batch (torch.manual_seed(seed); torch.randn(batch latent shape)) and its rules
    (tests/sampling/test_comfy_path.py), ComfyUI's prompt weights."""
    from tests.sampling.test_comfy_path import comfy_reference

    kw = {"steps": 3, "cfg": 8.0, "seed": 8566257, "size": 64, "syntax": "comfy"}
    expected = comfy_reference(pipe_sd1, "euler", "normal", 2, prompt="a red square", negative="bad hands", **kw)
    assert len(made) == 2
    assert max_pixel_diff([Image.open(p) for p in made], list(expected)) <= 1
    # ComfyUI's rule, not ours: image 1 is row 1 of the seed's batch, not the noise of seed + 1.
    side = 64 // pipe_sd1.scale_factor
    noise = torch.randn((2, 4, side, side), generator=torch.Generator().manual_seed(8566257))
    assert not torch.equal(noise[1], torch.randn((4, side, side), generator=torch.Generator().manual_seed(8566258)))


def test_records_what_ran_and_replays_one_image_of_the_batch(made, capsys, tmp_path):
    first, second = (meta(p) for p in made)
    assert (second["seed"], second["noise"], second["noise_batch"], second["noise_index"]) == (8566257, "comfy", 2, 1)
    assert (second["prompt_syntax"], second["scheduler"], first["noise_index"]) == ("comfy", "euler_normal", 0)
    (again,) = generate(capsys, "--from", made[1], "--out", tmp_path)
    assert meta(again)["noise_index"] == 1
    # Alone instead of in a batch of 2: the same noise; the UNet's batch of 2 may round 1/255 apart.
    assert np.abs(pixels(again).astype(int) - pixels(made[1]).astype(int)).max() <= 1


def test_checkpoint_found_in_a_comfy_models_folder(tiny_sd1, tmp_path, capsys):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_sd1, models / "checkpoints" / "sd" / "tiny")
    g = changed(**{"4": lambda n: with_inputs(n, ckpt_name="sd\\tiny"), "5": lambda n: with_inputs(n, batch_size=1)})
    (out,) = generate(capsys, "--from", comfy_png(tmp_path / "c.png", g), "--model", models, "--out", tmp_path / "o")
    assert meta(out)["model"].endswith("tiny")


LORA = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "style.safetensors"}}


@pytest.mark.parametrize(
    "graph, expected",
    [
        (changed(**{"10": {"class_type": "LatentUpscale", "inputs": {}}}), "'10' is a 'LatentUpscale'"),
        (changed(**{"3": lambda n: with_inputs(n, positive=["99", 0])}), "links to node '99', which the graph"),
        (changed(**{"3": lambda n: with_inputs(n, positive=["5", 0])}), "links to a EmptyLatentImage"),
        (changed(**{"8": lambda n: with_inputs(n, vae=["4", 1])}), "takes output 1 of CheckpointLoaderSimple"),
        (changed(**{"3": lambda n: with_inputs(n, denoise=0.5, sampler_name="uni_pc_bh2")}), "on ComfyUI's own path"),
        (changed(**{"3": lambda n: with_inputs(n, sampler_name="uni_pc_bh2", scheduler="simple")}), "'Simple'"),
        (changed(**{"3": lambda n: with_inputs(n, sampler_name="nope")}), "unknown scheduler 'nope'"),
        (changed(**{"3": lambda n: with_inputs(n, steps="20")}), "input 'steps' is '20', not a literal int"),
        (changed(**{"11": dict(GRAPH["3"])}), "2 sampler nodes, not one chain"),
        (
            changed(
                **{
                    "3": lambda n: with_inputs(n, model=["10", 0]),
                    "10": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": "x"}},
                }
            ),
            "cycle through LoraLoaderModelOnly node '10'",
        ),
        ({"1": "x"}, "node '1' is not a node"),
        ([1, 2], "is not a ComfyUI API graph"),
        ("[" * 100_000 + "]" * 100_000, "nests 100000 levels deep"),
        ('{"3": ' * 20 + "{}" + "}" * 20, "is not a node"),
        ({str(i): {"class_type": "VAELoader", "inputs": {}} for i in range(10_001)}, "10,001 nodes; at most 10,000"),
        ('{"1": "' + "x" * 2**21 + '"}', "text is 2.0 MiB; at most 1.0 MiB is read"),
    ],
    ids=lambda x: x if isinstance(x, str) and len(x) < 40 else "",
)
def test_graphs_latentdiff_cannot_run_are_one_line(graph, expected, tmp_path, capsys):
    err = fails(capsys, "--from", comfy_png(tmp_path / "c.png", graph), "--model", tmp_path)
    assert expected in err


def test_unsupported_node_lists_the_supported(tmp_path, capsys):
    g = changed(**{"8": {"class_type": "VAEDecodeTiled", "inputs": {}}})
    err = fails(capsys, "--from", comfy_png(tmp_path / "c.png", g), "--model", tmp_path)
    assert "CheckpointLoaderSimple, CLIPTextEncode, EmptyLatentImage, KSampler, KSamplerAdvanced" in err


def test_files_the_graph_names_must_be_found(tmp_path, capsys):
    png = comfy_png(tmp_path / "c.png", GRAPH)
    assert "loads checkpoint 'v1-5-pruned-emaonly.safetensors': pass --model" in fails(capsys, "--from", png)
    assert "which --model" in fails(capsys, "--from", png, "--model", tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "elsewhere.safetensors").write_bytes(b"x")
    g = changed(**{"4": lambda n: with_inputs(n, ckpt_name="../elsewhere.safetensors")})
    err = fails(capsys, "--from", comfy_png(tmp_path / "d.png", g), "--model", tmp_path / "checkpoints")
    assert "does not hold" in err  # a name may not leave its folder
    lora = changed(
        **{
            "3": lambda n: with_inputs(n, model=["10", 0]),
            "10": with_inputs(LORA, strength_model=0.5, strength_clip=0.5),
        }
    )
    lora["6"]["inputs"]["clip"] = lora["7"]["inputs"]["clip"] = ["10", 1]
    err = fails(capsys, "--from", comfy_png(tmp_path / "e.png", lora), "--model", tmp_path / "m.safetensors")
    assert "loads loras file 'style.safetensors': pass --lora-dir" in err


def test_ui_workflow_alone_is_named(tmp_path, capsys):
    err = fails(capsys, "--from", comfy_png(tmp_path / "c.png", None))
    assert "holds ComfyUI's UI workflow but not its API graph" in err


def test_advanced_sampler_reads_its_seed_and_its_partial_runs(tmp_path):
    from latentdiff.images.write import read_params

    adv = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **{k: v for k, v in GRAPH["3"]["inputs"].items() if k not in ("seed", "denoise")},
            "add_noise": "enable",
            "noise_seed": 42,
            "start_at_step": 0,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    params = read_params(comfy_png(tmp_path / "a.png", changed(**{"3": adv})))
    assert (params["seed"], params["steps"], params["guidance"], params["noise"]) == (42, 3, 8, "comfy")
    assert params["comfy"]["run"] is None  # the whole run from noise: the plain path
    for part in ({"end_at_step": 2}, {"start_at_step": 1}, {"add_noise": "disable"}):
        params = read_params(comfy_png(tmp_path / "b.png", changed(**{"3": with_inputs(adv, **part)})))
        assert params["comfy"]["run"]["stages"][0]["seed"] == 42  # tests/images/test_comfy_png_run.py runs them
    with pytest.raises(Exception, match="KSamplerAdvanced node '3': add_noise is 'off'"):
        read_params(comfy_png(tmp_path / "c.png", changed(**{"3": with_inputs(adv, add_noise="off")})))


def test_clip_skip_and_vae_loader(tmp_path):
    from latentdiff.images.write import read_params

    g = changed(
        **{
            "10": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}},
            "11": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse.safetensors"}},
            "8": lambda n: with_inputs(n, vae=["11", 0]),
        }
    )
    g["6"]["inputs"]["clip"] = g["7"]["inputs"]["clip"] = ["10", 0]
    params = read_params(comfy_png(tmp_path / "a.png", g))
    assert (params["clip_skip"], params["comfy"]["vae"]) == (2, "vae-ft-mse.safetensors")


def lora_graph(model_only: bool = False):
    """GRAPH with a LoRA between the checkpoint and the sampler (and, for LoraLoader, both prompts)."""
    if model_only:
        node = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": "style.safetensors"}}
        return changed(**{"3": lambda n: with_inputs(n, model=["10", 0]), "10": with_inputs(node, strength_model=0.8)})
    g = changed(
        **{
            "3": lambda n: with_inputs(n, model=["10", 0]),
            "10": with_inputs(LORA, strength_model=0.7, strength_clip=0.3),
        }
    )
    g["6"]["inputs"]["clip"] = g["7"]["inputs"]["clip"] = ["10", 1]
    g["5"]["inputs"]["batch_size"] = 1
    return g


def test_lora_loaders_are_the_lora_flag_with_their_two_strengths(tiny_sd1, tmp_path, capsys):
    """A LoraLoader's model and CLIP strengths are --lora FILE:MODEL:CLIP; a LoraLoaderModelOnly merges
    into the UNet alone (CLIP 0); the result records both and replays."""
    loras = tmp_path / "loras"
    loras.mkdir()
    kohya_file(loras / "style.safetensors")
    common = ("--model", tiny_sd1, "--lora-dir", loras)
    (made,) = generate(capsys, "--from", comfy_png(tmp_path / "l.png", lora_graph()), *common, "--out", tmp_path / "a")
    flags = ("a red square", "--negative", "bad hands", "--model", tiny_sd1, "--steps", 3, "--guidance", 8)
    flags += ("--seed", 8566257, "--scheduler", "euler_normal", "--prompt-syntax", "comfy", "--noise", "comfy")
    (same,) = generate(capsys, *flags, "--lora", f"{loras / 'style.safetensors'}:0.7:0.3", "--out", tmp_path / "b")
    (plain,) = generate(capsys, *flags, "--out", tmp_path / "c")
    assert np.array_equal(pixels(made), pixels(same)) and not np.array_equal(pixels(made), pixels(plain))
    assert [(x["scale"], x["te_scale"]) for x in meta(made)["loras"]] == [(0.7, 0.3)]
    (again,) = generate(capsys, "--from", made, "--out", tmp_path / "d")
    assert np.array_equal(pixels(again), pixels(made))
    g = lora_graph(model_only=True)
    g["5"]["inputs"]["batch_size"] = 1
    (unet_only,) = generate(capsys, "--from", comfy_png(tmp_path / "m.png", g), *common, "--out", tmp_path / "e")
    assert [(x["scale"], x["te_scale"]) for x in meta(unet_only)["loras"]] == [(0.8, 0.0)]


def test_samplers_and_schedulers_through_the_table(tmp_path):
    from latentdiff.images.write import read_params

    def scheduler(sampler_name, name):
        g = changed(**{"3": lambda n: with_inputs(n, sampler_name=sampler_name, scheduler=name)})
        params = read_params(comfy_png(tmp_path / "s.png", g))
        return params["scheduler"], params["notes"]

    assert scheduler("dpmpp_2m_sde_gpu", "karras") == ("dpm++2m_sde_karras", [])
    assert scheduler("euler", "normal") == ("euler_normal", [])
    # ComfyUI's own samplers run its own path with any of its schedulers; ancestral step noise as on its GPUs
    assert scheduler("euler_ancestral", "normal") == (
        "euler_a_normal",
        ["euler_ancestral's step noise is drawn as ComfyUI draws it on an NVIDIA GPU (--noise comfy: as on a CPU)"],
    )
    assert scheduler("dpmpp_2m", "linear_quadratic") == ("dpm++2m_linear_quadratic", [])
    # off that path "normal" is Uniform by definition; a sampler without sigma lists runs it so, and says so
    assert scheduler("uni_pc_bh2", "normal")[1] == ["ComfyUI's scheduler 'normal' runs as 'unipc_uniform'"]
    assert "NVIDIA GPU" in scheduler("ddpm", "normal")[1][0]  # ComfyUI's own DDPM draws step noise
