"""Flux.1 and SD 3/3.5 single files as users have them (formats/transformer_file.py): the original
key layout against diffusers' converters, transformer-only files completed by --components, fp8,
GGUF (Q8_0, Q4_0), detection, and the one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff.formats.transformer_keys import to_diffusers, to_original

SIZE = dict(width=32, height=32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("transformers")
    return {v: make_tiny(root / v, v, seed=3) for v in ("flux-dev", "sd3.5-medium")}


def _pipe(model, **kw):
    from latentdiff import Pipeline

    pipe = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", **kw)
    pipe.progress = False
    return pipe


def _pixels(pipe) -> np.ndarray:
    return np.asarray(pipe("a red apple", steps=2, seed=4, **SIZE)[0], dtype=np.int16)


def _weights(pipe) -> dict:
    return pipe.components.unet.state_dict()


def test_sd3_table_matches_diffusers_converter():
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from latentdiff.families.registry import FAMILIES

    for variant in ("sd3.5-medium", "sd3-medium"):  # dual attention and qk norm; neither
        sd = FAMILIES["sd3"].tiny(variant)["unet"].state_dict()
        original = to_original(sd, "sd3")
        theirs = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
        assert theirs.keys() == sd.keys() and all(torch.equal(theirs[k], sd[k]) for k in sd)
        assert all(torch.equal(v, sd[k]) for k, v in to_diffusers(original, "sd3", "x").items())


def test_flux_table_matches_diffusers_converter_at_released_width():
    """diffusers' Flux converter fixes the width at 3072: compared there, on the meta device (no memory)."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    with torch.device("meta"):
        model = FluxTransformer2DModel(num_layers=1, num_single_layers=2, guidance_embeds=True)
    sd = model.state_dict()
    original = to_original(sd, "flux")
    assert "single_blocks.1.linear1.weight" in original and "double_blocks.0.img_attn.qkv.bias" in original
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(original))
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    ours = to_diffusers(original, "flux", "x")
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("variant", ["flux-dev", "sd3.5-medium"])
def test_transformer_file_round_trip(folders, tmp_path, variant):
    from latentdiff.formats.transformer_file import save_transformer_file

    folder = _pipe(folders[variant])
    f = save_transformer_file(folder.components.unet, tmp_path / "t.safetensors")
    loaded = _pipe(f, components=folders[variant])
    want = _weights(folder)
    assert all(torch.equal(v, want[k]) for k, v in _weights(loaded).items())
    assert np.array_equal(_pixels(loaded), _pixels(folder))


def _foreign(sd: dict, family: str, prefix: str = "model.diffusion_model.") -> dict:
    """The original layout as a whole checkpoint holds it (no latentdiff metadata), with an encoder's tensor beside."""
    out = {prefix + k: v for k, v in to_original(sd, family).items()}
    return {**out, "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": torch.ones(4)}


def test_config_told_from_shapes():
    from diffusers import FluxTransformer2DModel

    from latentdiff.families.registry import FAMILIES
    from latentdiff.formats.transformer_file import _transformer_part, build_transformer

    sd3 = FAMILIES["sd3"].tiny("sd3.5-medium")["unet"]
    flux = FluxTransformer2DModel(in_channels=8, num_layers=1, num_single_layers=2, attention_head_dim=32,
                                  num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12,
                                  axes_dims_rope=(4, 14, 14))  # fmt: skip
    for family, model in (("sd3", sd3), ("flux", flux)):
        part = _transformer_part(_foreign(model.state_dict(), family))
        built = build_transformer(family, part, None, "x")
        keys = ("num_layers", "attention_head_dim", "num_attention_heads", "joint_attention_dim", "in_channels")
        assert all(built.config[k] == model.config[k] for k in keys)
        want = model.state_dict()
        assert all(torch.equal(v, want[k]) for k, v in built.state_dict().items())


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_weights_upcast(folders, tmp_path, scaled):
    from safetensors.torch import save_file

    folder = _pipe(folders["sd3.5-medium"])
    original = to_original(_weights(folder), "sd3")
    stored, want = {}, {}
    for k, v in original.items():
        scale = torch.tensor(0.5) if scaled and v.ndim == 2 else None
        stored[k] = (v / scale if scale is not None else v).to(torch.float8_e4m3fn)
        if scale is not None:
            stored[k.removesuffix("weight") + "scale_weight"] = scale
        want[k] = (stored[k].float() * (scale if scale is not None else 1)).to(torch.bfloat16).float()
    if scaled:
        stored["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(stored, str(tmp_path / "fp8.safetensors"))
    loaded = _pipe(tmp_path / "fp8.safetensors", components=folders["sd3.5-medium"])
    expect = to_diffusers(want, "sd3", "x")
    assert all(torch.equal(v, expect[k]) for k, v in _weights(loaded).items())
    folder.components.unet.load_state_dict(expect)  # the folder's model with the fp8-rounded weights
    assert np.array_equal(_pixels(loaded), _pixels(folder))


# The error bound, as a fraction of a tensor's largest value: Q8_0 steps by 1/127 of each 32-value
# block's largest value (error: half a step, plus 127 steps of its fp16 scale's rounding, 2^-11);
# Q4_0 steps by 1/8 of it from -8 to +7, so the largest value of the other sign is cut by a whole step.
BOUNDS = {"Q8_0": (0.5 + 127 / 2048) / 127, "Q4_0": 1 / 8 * (1 + 2**-10)}


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_gguf_loads_within_quantization_error(folders, tmp_path, qtype):
    """The dequantized weights within the bound (BOUNDS); the model keeps the matrices quantized
    (diffusers' GGUFLinear, uint8 blocks) and its pixels are within 1/255 of those of the dequantized
    weights (diffusers' torch dequantization and gguf's numpy one round alike but not identically)."""
    from latentdiff.formats.gguf_file import read_gguf, write_gguf

    folder = _pipe(folders["sd3.5-medium"])
    original = to_original(_weights(folder), "sd3")
    f = write_gguf(tmp_path / "t.gguf", "sd3", original, qtype)
    _, back = read_gguf(f)
    quantized = 0
    for k, v in original.items():
        err = (back[k] - v).abs().max().item()
        assert err <= BOUNDS[qtype] * v.abs().max().item(), (k, err)
        quantized += err > 0
    assert quantized > 10  # the matrices were quantized, not stored plain
    loaded = _pipe(f, components=folders["sd3.5-medium"])
    layers = [m for m in loaded.components.unet.modules() if type(m).__name__ == "GGUFLinear"]
    assert len(layers) >= quantized // 2 and all(m.weight.dtype == torch.uint8 for m in layers)
    folder.components.unet.load_state_dict(to_diffusers(back, "sd3", "x"))
    got, want = _pixels(loaded), _pixels(folder)
    assert np.abs(got - want).max() <= 1 and want.std() > 5


def test_detection_of_each_layout(folders, tmp_path):
    from safetensors.torch import save_file

    from latentdiff.errors import ModelError
    from latentdiff.formats.gguf_file import write_gguf
    from latentdiff.formats.transformer_file import transformer_family

    sd3 = to_original(_pipe(folders["sd3.5-medium"]).components.unet.state_dict(), "sd3")
    save_file({"model.diffusion_model." + k: v for k, v in sd3.items()}, str(tmp_path / "whole.safetensors"))
    save_file(sd3, str(tmp_path / "alone.safetensors"))
    assert transformer_family(tmp_path / "whole.safetensors") == transformer_family(tmp_path / "alone.safetensors")
    flux = {"img_in.weight": torch.ones(4, 32), "double_blocks.0.img_attn.qkv.weight": torch.ones(6, 32)}
    assert transformer_family(write_gguf(tmp_path / "q.gguf", "flux", flux)) == "flux"
    qwen21 = {"txt_in.text_norm.weight": torch.ones(2), "transformer_blocks.0.img_mod.1.weight": torch.ones(6, 2)}
    save_file(qwen21, str(tmp_path / "qwen21.safetensors"))
    with pytest.raises(ModelError, match="Qwen-Image 2.1 transformer.*supported.*Flux.1, SD 3/3.5, Chroma"):
        transformer_family(tmp_path / "qwen21.safetensors")


def _refused(run_main, tmp_path, *args):
    out = tmp_path / "out"
    code, stdout, err = run_main(["generate", "x", "--steps", "1", "--quiet", "--out", str(out), *map(str, args)])
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, (code, err)
    assert not out.exists()
    return err


def test_bad_transformer_files_are_one_line(folders, tmp_path, run_main):
    from safetensors.torch import save_file

    from latentdiff.formats.gguf_file import write_gguf
    from latentdiff.formats.transformer_file import save_transformer_file

    f = save_transformer_file(_pipe(folders["flux-dev"]).components.unet, tmp_path / "flux.safetensors")
    err = _refused(run_main, tmp_path, "--model", f)
    assert "Flux.1 transformer alone" in err and "CLIP-L and T5-XXL" in err and "--components" in err
    err = _refused(run_main, tmp_path, "--model", f, "--components", folders["sd3.5-medium"])
    assert "holds SD 3/3.5" in err
    err = _refused(run_main, tmp_path, "--model", folders["sd3.5-medium"], "--components", folders["sd3.5-medium"])
    assert "--components is for a transformer file as --model" in err
    comfy = tmp_path / "models"
    (comfy / "text_encoders").mkdir(parents=True)
    err = _refused(run_main, tmp_path, "--model", f, "--components", comfy)
    assert "holds no CLIP-L file" in err and "--text-encoder FILE" in err
    sd3 = save_transformer_file(_pipe(folders["sd3.5-medium"]).components.unet, tmp_path / "sd3.safetensors")
    err = _refused(run_main, tmp_path, "--model", sd3, "--components", comfy)
    assert "holds no CLIP-L file" in err and "which SD 3/3.5 needs" in err  # served from ComfyUI's folder too
    wan = write_gguf(tmp_path / "wan.gguf", "wan", {"blocks.0.weight": torch.ones(4, 32)})
    err = _refused(run_main, tmp_path, "--model", wan, "--components", folders["flux-dev"])
    assert "architecture 'wan'" in err and "flux, sd3" in err
    sd3 = to_original(_weights(_pipe(folders["sd3.5-medium"])), "sd3")
    q8 = write_gguf(tmp_path / "q8.gguf", "sd3", sd3)
    peft = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, 32)}
    save_file(
        {**peft, "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(32, 4)},
        str(tmp_path / "p.safetensors"),
    )
    err = _refused(
        run_main, tmp_path, "--model", q8, "--components", folders["sd3.5-medium"], "--lora", tmp_path / "p.safetensors"
    )
    assert "cannot merge into a GGUF model's quantized weights" in err
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(4, 32)}
    save_file(
        {**lora, "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(32, 4)},
        str(tmp_path / "l.safetensors"),
    )
    err = _refused(run_main, tmp_path, "--model", folders["sd3.5-medium"], "--lora", tmp_path / "l.safetensors")
    assert "none of its 2 tensors name a layer of this model" in err  # an SD LoRA on SD 3.5


def test_generate_from_a_transformer_file_and_replay_it(folders, tmp_path, run_main):
    """The PNG records --components and --text-encoder, so --from makes the same image without them."""
    from PIL import Image
    from safetensors.torch import save_file

    from latentdiff.formats.transformer_file import save_transformer_file

    pipe = _pipe(folders["sd3.5-medium"])
    f = save_transformer_file(pipe.components.unet, tmp_path / "sd3.safetensors")
    save_file(pipe.components.text_encoder.state_dict(), str(tmp_path / "clip_l.safetensors"))
    parts = ["--components", folders["sd3.5-medium"], "--text-encoder", tmp_path / "clip_l.safetensors"]
    argv = ["generate", "x", "--model", f, *parts, "--steps", "1", "--width", "32", "--height", "32", "--quiet"]
    code, stdout, err = run_main([*map(str, argv), "--out", str(tmp_path / "a")])
    assert code == 0, err
    code, again, err = run_main(["generate", "--from", stdout.strip(), "--quiet", "--out", str(tmp_path / "b")])
    assert code == 0, err
    first, second = (np.asarray(Image.open(p.strip())) for p in (stdout, again))
    assert np.array_equal(first, second) and first.std() > 5


def _equal(module, other) -> bool:
    mine, theirs = module.state_dict(), other.state_dict()
    return all(torch.equal(v, theirs[k]) for k, v in mine.items() if not k.endswith("position_ids"))


def test_a_whole_checkpoints_own_encoder_and_vae_are_used(folders, tmp_path):
    """Stability's whole-file layout: its CLIP-G and VAE (here another seed's) replace the folder's."""
    from safetensors.torch import save_file

    from latentdiff.families.registry import FAMILIES
    from latentdiff.formats.ldm_keys import vae_to_ldm

    folder = _pipe(folders["sd3.5-medium"])
    other = FAMILIES["sd3"].tiny("sd3.5-medium", seed=9)
    whole = {"model.diffusion_model." + k: v for k, v in to_original(_weights(folder), "sd3").items()}
    whole |= {f"text_encoders.clip_g.transformer.{k}": v for k, v in other["text_encoder_2"].state_dict().items()}
    whole |= vae_to_ldm(other["vae"].state_dict(), dict(other["vae"].config))
    save_file({k: v.contiguous() for k, v in whole.items()}, str(tmp_path / "whole.safetensors"))
    loaded = _pipe(tmp_path / "whole.safetensors", components=folders["sd3.5-medium"]).components
    assert _equal(loaded.text_encoder_2, other["text_encoder_2"]) and _equal(loaded.vae, other["vae"])
    assert _equal(loaded.text_encoder, folder.components.text_encoder)  # not in the file: the folder's


def test_text_encoder_files_replace_the_encoder_they_fit(folders, tmp_path):
    from safetensors.torch import save_file

    from latentdiff.errors import UsageError
    from latentdiff.families.registry import FAMILIES

    other = FAMILIES["sd3"].tiny("sd3.5-medium", seed=9)
    save_file(other["text_encoder"].state_dict(), str(tmp_path / "clip_l.safetensors"))
    loaded = _pipe(folders["sd3.5-medium"], text_encoders=[tmp_path / "clip_l.safetensors"]).components
    assert _equal(loaded.text_encoder, other["text_encoder"])
    fp8 = {k: v.to(torch.float8_e4m3fn) for k, v in other["text_encoder"].state_dict().items() if v.is_floating_point()}
    save_file(fp8, str(tmp_path / "clip_l_fp8.safetensors"))  # as t5xxl_fp8_e4m3fn.safetensors is kept
    loaded = _pipe(folders["sd3.5-medium"], text_encoders=[tmp_path / "clip_l_fp8.safetensors"]).components
    got = loaded.text_encoder.state_dict()
    assert all(torch.equal(got[k], v.float()) for k, v in fp8.items() if k in got)
    save_file({"encoder.block.0.weight": torch.ones(3)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(UsageError, match="fits none of the model's text encoders"):
        _pipe(folders["sd3.5-medium"], text_encoders=[tmp_path / "odd.safetensors"])


def test_damaged_layouts_are_one_error():
    """Block numbers with a gap (block 99999999 alone must not walk that many blocks), a missing
    embedding, a fused matrix that does not split: ModelError, not a hang or a traceback."""
    from latentdiff.errors import ModelError
    from latentdiff.families.registry import FAMILIES
    from latentdiff.formats.transformer_file import build_transformer

    sd3 = to_original(FAMILIES["sd3"].tiny()["unet"].state_dict(), "sd3")
    gap = {**sd3, "joint_blocks.99999999.x_block.attn.qkv.weight": torch.ones(3, 2)}
    with pytest.raises(ModelError, match="not numbered 0, 1, 2"):
        build_transformer("sd3", gap, None, "x")
    flux = {"double_blocks.0.img_attn.qkv.weight": torch.ones(6, 2), "single_blocks.0.linear1.weight": torch.ones(9, 4)}
    with pytest.raises(ModelError, match="lacks img_in.weight"):
        to_diffusers(flux, "flux", "x")
    flux["img_in.weight"] = torch.ones(8, 4)  # 3 x 8 rows of q, k, v: more than linear1's 9
    with pytest.raises(ModelError, match="does not split"):
        build_transformer("flux", flux, {"num_layers": 1}, "x")


def test_transformer_file_weights_checked_before_loading(folders, tmp_path, monkeypatch):
    """The refusal of weights that cannot fit counts a transformer file's parameters in the compute
    dtype (a bf16 file computed in fp32: 4 bytes each) beside the --components folder's encoders and VAE."""
    from latentdiff.errors import UsageError
    from latentdiff.formats.transformer_file import save_transformer_file

    unet = _pipe(folders["flux-dev"]).components.unet
    f = save_transformer_file(unet, tmp_path / "t.safetensors", dtype=torch.bfloat16)
    seen = {}

    def refuse(what, sizes, device, need, options):
        seen.update(sizes, what=what)
        raise UsageError("refused")

    monkeypatch.setattr("latentdiff.formats.memory_check.check_weights_fit", refuse)
    monkeypatch.setattr("latentdiff.formats.transformer_file.build", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(UsageError, match="refused"):
        _pipe(f, components=folders["flux-dev"])
    assert seen.pop("what") == "Flux.1 in fp32"
    assert seen.pop("transformer") == 4 * sum(p.numel() for p in unet.parameters())
    assert set(seen) == {"text_encoder", "text_encoder_2", "vae"}
