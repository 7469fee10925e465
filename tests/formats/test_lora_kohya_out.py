"""finetune --method lora writes kohya's LoRA layout too (--lora-format, export): its keys and alpha,
the same pixels through latentdiff's --lora and diffusers' load_lora_weights + fuse_lora."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from latentdiff import Pipeline, UsageError
from latentdiff.formats.lora_kohya import KOHYA_FILE, base_model_version, save_kohya
from latentdiff.formats.lora_merge import LORA_FILE
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.loop import finetune

RANK = 4
PROMPT = "a red square"
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for i, color in enumerate(["red", "blue"]):
        Image.new("RGB", (64, 64), color).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {color} square")
    return root


def train(dataset, model, out, **kw):
    base = dict(
        dataset=str(dataset),
        model=str(model),
        out=str(out),
        max_steps=2,
        batch_size=2,
        resolution=64,
        lr=1e-2,
        lora_rank=RANK,
        checkpoint_every=1,
        seed=3,
    )
    return finetune(FinetuneConfig(**{**base, **kw}))


@pytest.fixture(scope="module")
def runs(dataset, tiny_sd1, tmp_path_factory):
    """{"unet": a 2-step LoRA run, "te": the same with --train-text-encoder}, both formats (the default)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "unet": train(dataset, tiny_sd1, root / "unet"),
        "te": train(dataset, tiny_sd1, root / "te", train_text_encoder=True),
    }


def kohya_of(run, name=None):
    """A run's kohya file: named after the run folder unless --output-name says otherwise."""
    return run / f"{name or run.name}.safetensors"


def pipeline(model, loras=()):
    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", loras=[str(x) for x in loras])
    pipe.progress = False
    return pipe


def render(model, loras=(), pipe=None):
    pipe = pipe or pipeline(model, loras)
    return np.asarray(pipe(PROMPT, steps=2, guidance=5.0, seed=0)[0], dtype=int)


def diffusers_fused(model, lora_file):
    from diffusers import StableDiffusionPipeline

    ref = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.load_lora_weights(str(lora_file))
    ref.fuse_lora()
    image = ref(PROMPT, num_inference_steps=2, guidance_scale=5.0, generator=[torch.Generator("cpu").manual_seed(0)])
    return np.asarray(image.images[0], dtype=int), ref


def modules_of(tensors: dict) -> dict:
    """{kohya module name: set of its tensor suffixes}."""
    out = {}
    for key in tensors:
        name, suffix = key.split(".", 1)
        out.setdefault(name, set()).add(suffix)
    return out


def expected_kohya(diffusers: dict) -> dict:
    """{kohya module name: (down, up)} the diffusers file of the same run implies, named as A1111
    and kohya name SD 1.x layers (`lora_unet_<path>`, `lora_te_text_model_<path>`)."""
    out = {}
    for key, tensor in diffusers.items():
        path, kind = key.rsplit(".", 3)[0], key.rsplit(".", 2)[1]  # kind: down or up
        part, path = path.split(".", 1)
        name = ("lora_unet_" if part == "unet" else "lora_te_text_model_") + path.replace(".", "_")
        out.setdefault(name, {})[kind] = tensor
    return out


@pytest.mark.parametrize("which", ["unet", "te"])
def test_kohya_keys_alpha_and_metadata(runs, which):
    run = runs[which]
    kohya, diffusers = load_file(str(kohya_of(run))), load_file(str(run / LORA_FILE))
    modules = modules_of(kohya)
    expected = expected_kohya(diffusers)
    assert modules.keys() == expected.keys()  # the same layers as the diffusers file, under kohya's names
    assert all(s == {"lora_down.weight", "lora_up.weight", "alpha"} for s in modules.values())
    assert all(
        torch.equal(kohya[f"{m}.lora_down.weight"], expected[m]["down"])
        and torch.equal(kohya[f"{m}.lora_up.weight"], expected[m]["up"])
        for m in modules
    )
    te = [m for m in modules if m.startswith("lora_te_")]
    assert f"lora_unet_{Q.replace('.', '_')}" in modules
    assert len(te) == (2 * 4 if which == "te" else 0)  # 2 CLIP layers x q, k, v, out projections
    assert ("lora_te_text_model_encoder_layers_1_self_attn_out_proj" in te) == (which == "te")
    assert all(kohya[f"{m}.alpha"].dtype == torch.float32 and kohya[f"{m}.alpha"].item() == RANK for m in modules)
    assert all(kohya[f"{m}.lora_down.weight"].shape[0] == RANK for m in modules)
    with safe_open(str(kohya_of(run)), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == (str(RANK), f"{float(RANK)}")
    assert meta["ss_output_name"] == run.name and meta["ss_steps"] == "2" and meta["ss_resolution"] == "(64, 64)"
    assert "ss_base_model_version" not in meta  # a tiny model is no released SD version: claim none


@pytest.mark.parametrize("which", ["unet", "te"])
def test_kohya_file_gives_the_run_folders_pixels(runs, tiny_sd1, which):
    run = runs[which]
    folder = render(run)
    assert np.abs(folder - render(tiny_sd1)).max() > 2, "the LoRA must change the image for this to mean anything"
    pipe = pipeline(tiny_sd1, [kohya_of(run)])
    ours = render(None, pipe=pipe)
    theirs, ref = diffusers_fused(tiny_sd1, kohya_of(run))
    if which == "te":  # both readers found the text encoder's layers in the kohya file
        layer = "encoder.layers.0.self_attn.q_proj"
        merged = pipe.components.text_encoder.get_submodule(layer).weight
        base = pipeline(tiny_sd1).components.text_encoder.get_submodule(layer).weight
        assert (merged - base).abs().max() > 1e-4
        assert torch.allclose(merged, ref.text_encoder.get_submodule(layer).weight, atol=1e-6)
    print(
        f"{which}: latentdiff --lora kohya vs run folder {np.abs(ours - folder).max()}/255, "
        f"diffusers fuse_lora {np.abs(theirs - folder).max()}/255"
    )
    assert np.abs(ours - folder).max() <= 1
    assert np.abs(theirs - folder).max() <= 2


def test_alpha_other_than_rank_is_written_and_honoured(tiny_sd1, tmp_path):
    """Kohya's scale is alpha / rank: a LoRA trained with alpha 2 x rank must say 2 x rank."""
    from peft import LoraConfig, inject_adapter_in_model

    from latentdiff.models.assemble import load_components

    c = load_components(tiny_sd1)
    torch.manual_seed(0)
    inject_adapter_in_model(
        LoraConfig(
            r=RANK,
            lora_alpha=2 * RANK,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        ),
        c.unet,
    )
    layer = c.unet.get_submodule(Q)
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)  # peft starts B at zero: no delta to check
    save_kohya(tmp_path / "a.safetensors", {"unet": c.unet})
    tensors = load_file(str(tmp_path / "a.safetensors"))
    assert {v.item() for k, v in tensors.items() if k.endswith(".alpha")} == {2.0 * RANK}
    down, up = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.base_layer.weight + 2.0 * (up @ down)
    pipe = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32", loras=[str(tmp_path / "a.safetensors")])
    assert torch.allclose(pipe.components.unet.get_submodule(Q).weight, expected, atol=1e-5)


def test_base_model_version_of_the_released_architectures():
    from latentdiff.families.released import family_configs

    def version(family, **kw):
        cfg = family_configs(family, **kw)
        unet = SimpleNamespace(config=cfg["unet"])
        return base_model_version(
            SimpleNamespace(
                unet=unet, vae=SimpleNamespace(config=cfg["vae"]), scheduler_config=cfg["scheduler"], index={}
            )
        )

    assert version("sd1") == "sd_v1"
    assert version("sd2", prediction="epsilon") == "sd_v2"
    assert version("sd2") == "sd_v2_v"
    assert version("sdxl") == "sdxl_base_v1-0"


def test_kohya_metadata_names_the_base_it_was_trained_on(tmp_path):
    from latentdiff.families.released import family_configs

    cfg = family_configs("sd2")
    base = SimpleNamespace(
        unet=SimpleNamespace(config=cfg["unet"]),
        vae=SimpleNamespace(config=cfg["vae"]),
        scheduler_config=cfg["scheduler"],
        index={},
    )
    save_kohya(tmp_path / "a.safetensors", {}, {"ss_steps": 2}, components=base)
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        meta = f.metadata()
    assert (meta["ss_base_model_version"], meta["ss_v2"], meta["ss_steps"]) == ("sd_v2_v", "True", "2")


def test_formats_resume_and_export(dataset, tiny_sd1, runs, tmp_path):
    from latentdiff.cli.main import main

    run = train(dataset, tiny_sd1, tmp_path / "run", lora_format="diffusers")
    assert (run / LORA_FILE).is_file() and not kohya_of(run).exists()
    # The layout is an output choice: a resume may change it; the other layout's file does not linger.
    run = train(dataset, tiny_sd1, run, max_steps=3, lora_format="kohya", resume=True)
    assert kohya_of(run).is_file() and not (run / LORA_FILE).exists()
    assert json.loads((run / "latentdiff.json").read_text())["lora"] == "run.safetensors"
    assert "lora_format: kohya" in (run / "config.yaml").read_text()
    kohya_only = render(run)  # the folder stays a model: latentdiff.json names the kohya file
    assert main(["export", str(run), "--out", str(tmp_path / "d"), "--lora-format", "diffusers"]) == 0
    assert not list((tmp_path / "d").glob("run*.safetensors"))
    assert np.abs(kohya_only - render(tmp_path / "d")).max() <= 1
    # export --step N writes the run's layouts for that checkpoint, the kohya file named after the run
    assert main(["export", str(runs["te"]), "--step", "2", "--out", str(tmp_path / "two")]) == 0
    assert main(["export", str(runs["te"]), "--step", "1", "--out", str(tmp_path / "one")]) == 0
    final, two = load_file(str(kohya_of(runs["te"]))), load_file(str(tmp_path / "two" / "te.safetensors"))
    assert final.keys() == two.keys() and all(torch.equal(final[k], two[k]) for k in final)
    one = load_file(str(tmp_path / "one" / "te.safetensors"))
    assert any(not torch.equal(final[k], one[k]) for k in final)
    assert (tmp_path / "one" / LORA_FILE).is_file()


def test_output_name_and_runs_from_before_it(dataset, tiny_sd1, tmp_path):
    """--output-name names the kohya file (A1111 credits the file's name in infotext, and kohya's
    ss_output_name says it); a run whose kohya file is the old lora_kohya.safetensors still loads,
    and its resume replaces that file by the named one."""
    run = train(dataset, tiny_sd1, tmp_path / "run", lora_format="kohya", output_name="my-style.safetensors")
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["my-style.safetensors"]
    with safe_open(str(run / "my-style.safetensors"), "pt") as f:
        assert f.metadata()["ss_output_name"] == "my-style"
    assert "output_name: my-style" in (run / "config.yaml").read_text()
    named = render(run)
    # What a run wrote before --output-name existed: lora_kohya.safetensors, named by latentdiff.json.
    (run / "my-style.safetensors").rename(run / KOHYA_FILE)
    meta = json.loads((run / "latentdiff.json").read_text())
    (run / "latentdiff.json").write_text(json.dumps({**meta, "lora": KOHYA_FILE}))
    assert np.abs(render(run) - named).max() == 0
    from latentdiff.cli.main import main

    assert main(["finetune", str(dataset), "--out", str(run), "--resume", "--max-steps", "3"]) == 0  # the saved name
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["my-style.safetensors"]
    with pytest.raises(UsageError, match="plain file name"):
        train(dataset, tiny_sd1, tmp_path / "bad", output_name="../elsewhere")
