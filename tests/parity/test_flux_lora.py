"""Flux.1 LoRA files merge as diffusers' FluxPipeline loads and fuses them (fp32, tiny random model):
a peft/diffusers file written by FluxPipeline.save_lora_weights, with its transformer and CLIP parts."""

from __future__ import annotations

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
