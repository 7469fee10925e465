"""ComfyUI's SDXL base + refiner graph: a second CheckpointLoaderSimple whose model runs the chain's
later KSamplerAdvanced nodes on its own CLIPTextEncode prompts (images/comfy_checkpoints.py), found by
name in the --model folder or given by --refiner (config/comfy_files.py), run on ComfyUI's path with the
refiner's network, model sampling and prompts (workflows/comfy_path.py) and decoded by its VAE; against
ComfyUI's rules rebuilt with k-diffusion's own `sample_*` around k-diffusion's denoiser of each model.
Tiny random SDXL base and refiner, pixels within 1/255."""

import numpy as np
import pytest
import torch

from latentdiff.config.comfy_files import resolve
from latentdiff.errors import UsageError
from latentdiff.images.comfy_graph import params_from_comfy
from latentdiff.images.write import to_pil
from tests.images.test_comfy_png_run import chained_graph
from tests.sampling.kdiffusion_ref import load
from tests.sampling.test_a1111_path import k_wrap
from tests.sampling.test_comfy_path import Sampling, reference_sigmas

PROMPT, NEGATIVE, SIZE, CFG, SEED = "a red fox", "blurry", 64, 5.0, 5


def refiner_graph() -> dict:
    """chained_graph()'s second node on checkpoint "20" (the refiner), its prompts and the decode's VAE from it."""
    g = chained_graph()
    g["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl_refiner.safetensors"}}
    for key, side in (("21", "6"), ("22", "7")):
        g[key] = {"class_type": "CLIPTextEncode", "inputs": {**g[side]["inputs"], "clip": ["20", 1]}}
    g["12"]["inputs"].update(model=["20", 0], positive=["21", 0], negative=["22", 0])
    g["8"]["inputs"]["vae"] = ["20", 2]
    return g


def test_the_refiner_graph_reads_into_two_checkpoints():
    comfy = params_from_comfy(refiner_graph(), "graph")["comfy"]
    assert comfy["refiner"] == "sdxl_refiner.safetensors" and comfy["vae"] is None
    assert [st.get("refiner", False) for st in comfy["run"]["stages"]] == [False, True]


def lora_on_refiner(g):
    g["23"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["20", 0], "lora_name": "x", "strength_model": 1},
    }
    g["12"]["inputs"]["model"] = ["23", 0]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda g: g["21"]["inputs"].update(text="other"), "refiner's positive prompt differs from the base's"),
        (lambda g: g["22"]["inputs"].update(clip=["4", 1]), "negative prompt is not encoded by the refiner checkpoint"),
        (lambda g: g["8"]["inputs"].update(vae=["4", 2]), "decodes with another VAE than the refiner checkpoint's"),
        (lora_on_refiner, "refiner's model goes through LoRA nodes"),
    ],
)
def test_refiner_graphs_latentdiff_cannot_run_are_one_line(change, message):
    g = refiner_graph()
    change(g)
    with pytest.raises(UsageError, match=message):
        params_from_comfy(g, "graph")


def test_the_refiner_is_found_in_the_models_folder(tmp_path):
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("v1-5-pruned-emaonly.safetensors", "sdxl_refiner.safetensors"):
        (folder / name).write_bytes(b"")
    params = params_from_comfy(refiner_graph(), "graph")
    out = resolve(params, {"model": str(tmp_path / "models")}, "graph")
    assert out["refiner"] == str(folder / "sdxl_refiner.safetensors")
    assert resolve(params, {"model": str(folder), "refiner": "R"}, "graph")["refiner"] == "R"
    with pytest.raises(UsageError, match="loads refiner checkpoint 'sdxl_refiner.safetensors': pass --refiner"):
        resolve(params, {"model": str(folder / "v1-5-pruned-emaonly.safetensors")}, "graph")


@pytest.fixture(scope="module")
def pair(tiny_sdxl, tiny_refiner):
    from latentdiff import Pipeline

    base, refiner = (Pipeline.from_pretrained(p, device="cpu", dtype="fp32") for p in (tiny_sdxl, tiny_refiner))
    for p in (base, refiner):
        p.progress = False
    base.set_refiner(refiner)
    return base, refiner


@torch.no_grad()
def reference(base, refiner, runs):
    """ComfyUI's chain: `runs` = [(model, sampler function, sigmas, add noise)], each from the last one's latents."""
    ks, _ = load()
    side = SIZE // base.scale_factor
    latent = torch.zeros((1, 4, side, side))
    for pipe, name, sigmas, add in runs:
        wrap = k_wrap(pipe)
        cond, uncond = pipe.conditioning([PROMPT], [NEGATIVE], SIZE, SIZE, "plain", 1)

        def model(x, sigma, wrap=wrap, cond=cond, uncond=uncond, **_):
            c, u = wrap(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cond.cat(uncond)).chunk(2)
            return u + (c - u) * CFG

        noise = torch.randn(latent.shape, generator=torch.manual_seed(SEED)) if add else torch.zeros_like(latent)
        g, shape = torch.Generator().manual_seed(SEED + 1), latent.shape
        options = (
            {"noise_sampler": lambda a, b, g=g, shape=shape: torch.randn(shape, generator=g)}
            if "ancestral" in name
            else {}
        )
        x = noise * (1 + sigmas[0] ** 2) ** 0.5 if pipe is base and add else noise * sigmas[0] + latent
        latent = getattr(ks, name)(model, x, sigmas, disable=True, **options)
    return np.asarray(to_pil(refiner.decode(latent))[0])


def test_base_then_refiner_matches_comfyuis_rules(pair):
    base, refiner = pair
    full = reference_sigmas(Sampling(base.components.scheduler_config), "karras", 5)
    runs = [(base, "sample_dpmpp_2m", full[:3], True), (refiner, "sample_euler_ancestral", full[2:], False)]
    common = {"scheduler": "karras", "steps": 5, "cfg": CFG, "seed": SEED}
    stages = [
        {**common, "sampler": "dpmpp_2m", "end": 2, "leftover": True},
        {**common, "sampler": "euler_ancestral", "start": 2, "add_noise": False, "refiner": True},
    ]
    (image,) = base(PROMPT, negative_prompt=NEGATIVE, width=SIZE, height=SIZE, seed=SEED, guidance=CFG,
                    prompt_syntax="plain", noise="comfy", comfy_graph={"stages": stages})  # fmt: skip
    want = reference(base, refiner, runs)
    assert np.abs(np.asarray(image).astype(int) - want.astype(int)).max() <= 1
