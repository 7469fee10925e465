"""Flux.1 LoRA files merge as diffusers' FluxPipeline loads and fuses them (fp32, tiny random model):
a peft/diffusers file written by FluxPipeline.save_lora_weights, with its transformer and CLIP parts."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

W, H = 32, 32


@pytest.fixture(scope="module")
def flux_and_lora(tmp_path_factory):
    from diffusers import FluxPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("flux-lora")
    model = make_tiny(root / "dev", "flux-dev", seed=3)
    ref = FluxPipeline.from_pretrained(model, dtype=torch.float32)
    torch.manual_seed(0)
    ref.transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "proj_out"]))
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]), ref.text_encoder)
    with torch.no_grad():
        for module in (ref.transformer, ref.text_encoder):
            for name, p in module.named_parameters():
                if "lora_B" in name:  # peft starts B at zero: a LoRA that changes nothing would prove nothing
                    p.normal_(0, 0.3)
    FluxPipeline.save_lora_weights(
        root / "lora",
        transformer_lora_layers=get_peft_model_state_dict(ref.transformer),
        text_encoder_lora_layers=get_peft_model_state_dict(ref.text_encoder),
    )
    return model, root / "lora" / "pytorch_lora_weights.safetensors"


def _reference(model, lora, scale: float, seed: int):
    from diffusers import FluxPipeline

    ref = FluxPipeline.from_pretrained(model, dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)
    ref.load_lora_weights(str(lora), adapter_name="x")
    # The adapter kept unfused at `scale` (diffusers' set_adapters): fuse_lora leaves the CLIP encoder's
    # adapter unfused at scale 1 with the transformers/peft here, which would make a wrong reference.
    ref.set_adapters(["x"], adapter_weights=[scale])
    gen = [torch.Generator("cpu").manual_seed(seed)]
    out = ref(
        "a red apple", guidance_scale=3.5, num_inference_steps=3, width=W, height=H, generator=gen, output_type="np"
    )
    return np.round(out.images * 255)


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_a_flux_lora_merges_as_diffusers_fuses_it(flux_and_lora, scale):
    from latentdiff import Pipeline

    model, lora = flux_and_lora
    ours = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", loras=[f"{lora}:{scale}"])
    ours.progress = False
    got = np.stack(
        [np.asarray(i, dtype=np.float32) for i in ours("a red apple", guidance=3.5, steps=3, width=W, height=H, seed=7)]
    )
    ref = _reference(model, lora, scale, 7)
    plain = Pipeline.from_pretrained(model, device="cpu", dtype="fp32")
    plain.progress = False
    base = np.asarray(plain("a red apple", guidance=3.5, steps=3, width=W, height=H, seed=7)[0], dtype=np.float32)
    assert np.abs(got - ref).max() <= 1
    assert np.abs(got[0] - base).max() > 10  # the LoRA changed the picture


def test_a_sd_lora_on_flux_is_one_line(flux_and_lora, tiny_sd1, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from latentdiff import Pipeline
    from latentdiff.errors import ModelError

    sd = StableDiffusionPipeline.from_pretrained(tiny_sd1)
    sd.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(sd.unet))
    with pytest.raises(ModelError, match=r"--lora .* (does not fit this model|none of its \d+ tensors name a layer)"):
        Pipeline.from_pretrained(
            flux_and_lora[0], device="cpu", loras=[str(tmp_path / "pytorch_lora_weights.safetensors")]
        )


def _factors(prefix: str, shape: tuple[int, int], names=("lora_down", "lora_up"), alpha: bool = True) -> dict:
    """A seeded rank-4 pair of low-rank factors of a (in, out) layer under `prefix`, with kohya's alpha."""
    gen = torch.Generator().manual_seed(len(prefix))
    down, up = (torch.randn(s, generator=gen) * 0.3 for s in ((4, shape[0]), (shape[1], 4)))
    alphas = {f"{prefix}.alpha": torch.tensor(2.0)} if alpha else {}
    return {f"{prefix}.{names[0]}.weight": down, f"{prefix}.{names[1]}.weight": up, **alphas}


# The community layouts of a Flux.1 LoRA on the tiny model (32 features; a single block's MLP 128): layer, (in, out).
# kohya's fused single-block linear1 is left out: diffusers' converter splits it at the released width (3072).
LAYERS = {"double_blocks.0.img_attn.qkv": (32, 96), "double_blocks.0.img_attn.proj": (32, 32)}
LAYOUTS = {
    "kohya": {
        f"lora_unet_{k.replace('.', '_')}": s for k, s in {**LAYERS, "single_blocks.0.linear2": (160, 32)}.items()
    },
    "comfyui": {f"diffusion_model.{k}": s for k, s in {**LAYERS, "double_blocks.0.txt_attn.qkv": (32, 96)}.items()},
    "xlabs": {f"double_blocks.0.processor.{k}": (32, 96 if "qkv" in k else 32) for k in ("qkv_lora1", "proj_lora2")},
}


def _community_file(folder, layout: str, layers: dict, **how):
    from safetensors.torch import save_file

    path = folder / f"{layout}.safetensors"
    tensors = {k: v for name, shape in layers.items() for k, v in _factors(name, shape, **how).items()}
    if layout == "control":  # BFL's Control LoRAs carry the attention norms' scales beside the factors
        tensors["double_blocks.0.img_attn.norm.query_norm.scale"] = torch.ones(16)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_community_flux_loras_merge_as_diffusers_loads_them(flux_and_lora, tmp_path, layout):
    """kohya's sd-scripts, ComfyUI's original-key layout and XLabs', converted by diffusers' loader."""
    from latentdiff import Pipeline

    how = {"names": ("down", "up"), "alpha": False} if layout == "xlabs" else {}
    lora = _community_file(tmp_path, layout, LAYOUTS[layout], **how)
    ours = Pipeline.from_pretrained(flux_and_lora[0], device="cpu", dtype="fp32", loras=[str(lora)])
    ours.progress = False
    got = np.asarray(ours("a red apple", guidance=3.5, steps=3, width=W, height=H, seed=7)[0], dtype=np.float32)
    assert np.abs(got - _reference(flux_and_lora[0], lora, 1.0, 7)[0]).max() <= 1


@pytest.mark.parametrize(
    "layout, layers, says",
    [
        ("control", {"img_in": (128, 32)}, "Control LoRA"),
        ("kohya", {"lora_unet_single_blocks_0_linear1": (32, 224)}, "diffusers' converter of its layout"),
        ("peft-original-keys", {f"diffusion_model.{k}": s for k, s in LAYERS.items()}, "original .* key layout"),
    ],
)
def test_flux_loras_diffusers_cannot_read_are_one_line(flux_and_lora, tmp_path, capsys, layout, layers, says):
    """A Control LoRA (it widens the model's input for a control image), kohya's linear1 at another width than
    the release's, original keys with peft's factor names (diffusers converts them only as kohya's):
    one line naming the layout, exit 2, nothing written."""
    from helpers import fails

    names = {"names": ("lora_A", "lora_B"), "alpha": False} if layout != "kohya" else {}
    lora = _community_file(tmp_path, layout, layers, **names)
    line = fails(capsys, "a cat", "--model", flux_and_lora[0], "--lora", lora, "--out", tmp_path / "out")
    assert re.search(says, line), line
    assert not (tmp_path / "out").exists()
