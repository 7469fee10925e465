"""`finetune --method lora --lora-format kohya|both` on Flux.1 writes kohya's layout (formats/lora_flux_kohya.py) on a
tiny random model (fp32, CPU): merged as ComfyUI merges it (up @ down * alpha / rank added to the original
checkpoint's fused weights) it changes the transformer exactly as diffusers fuses the run's peft file; read by
diffusers' kohya converter and by our --lora it gives the peft file's pixels. diffusers' converter asserts the
released model's single-block width (3072), so that half runs on the file without the single blocks' linear1."""

from __future__ import annotations

import numpy as np
import pytest
from flow_parity import close, pixels, reference, reference_pixels
from helpers import cfg
from safetensors.torch import load_file, save_file

from latentdiff.formats.transformer_keys import to_diffusers, to_original
from latentdiff.training.loop import finetune

SIZE = (32, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("flux-kohya")
    base = make_tiny(root / "dev", "flux-dev", seed=1)
    run = cfg(dataset, base, root / "run", resolution=SIZE[0], lr=3e-2, max_steps=2, batch_size=2, output_name="style")
    out = finetune(run)
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "pytorch_lora_weights.safetensors",
        "style.safetensors",
    ]
    return base, out


def _fused(base, lora) -> dict:
    ref = reference(base, "FluxPipeline")
    ref.load_lora_weights(str(lora))
    ref.fuse_lora()
    ref.unload_lora_weights()
    return ref.transformer.state_dict()


def test_merged_as_comfyui_merges_it_equals_the_diffusers_file_fused(trained):
    base, out = trained
    kohya = load_file(str(out / "style.safetensors"))
    plain = reference(base, "FluxPipeline").transformer.state_dict()
    original = to_original(plain, "flux")
    names = {"lora_unet_" + n.removesuffix(".weight").replace(".", "_"): n for n in original if n.endswith(".weight")}
    for key in {k.rsplit(".lora_down.", 1)[0] for k in kohya if ".lora_down." in k}:
        down, up, alpha = kohya[f"{key}.lora_down.weight"], kohya[f"{key}.lora_up.weight"], kohya[f"{key}.alpha"]
        original[names[key]] += up @ down * (alpha / len(down))
    merged, want = to_diffusers(original, "flux", "merged"), _fused(base, out / "pytorch_lora_weights.safetensors")
    assert max((merged[k] - want[k]).abs().max().item() for k in want) < 1e-5
    assert max((want[k] - plain[k]).abs().max().item() for k in want) > 1e-3  # the LoRA changes the weights
    assert any("single_blocks_0_linear1" in k for k in kohya) and any("img_attn_qkv" in k for k in kohya)


def test_diffusers_and_our_loader_read_it_as_the_peft_file(trained, tmp_path):
    from latentdiff import Pipeline

    base, out = trained
    double = {k: v for k, v in load_file(str(out / "style.safetensors")).items() if "single_blocks" not in k}
    peft = {k: v for k, v in load_file(str(out / "pytorch_lora_weights.safetensors")).items() if "single_" not in k}
    save_file(double, str(tmp_path / "kohya.safetensors"))
    save_file(peft, str(tmp_path / "peft.safetensors"))
    args = dict(prompt="a red circle", guidance_scale=3.5, num_inference_steps=2)
    ref, want = reference(base, "FluxPipeline"), []
    for name in ("kohya", "peft"):
        ref.load_lora_weights(str(tmp_path / f"{name}.safetensors"))
        want.append(reference_pixels(ref, 7, 1, SIZE, **args))
        ref.unload_lora_weights()
    assert np.array_equal(want[0], want[1])
    assert np.abs(want[0] - reference_pixels(ref, 7, 1, SIZE, **args)).max() > 1  # the LoRA changes the picture
    mine = Pipeline.from_pretrained(base, device="cpu", dtype="fp32", loras=[str(tmp_path / "kohya.safetensors")])
    mine.progress = False
    close(pixels(mine("a red circle", guidance=3.5, steps=2, width=SIZE[0], height=SIZE[1], seed=7)), want[0])
