"""LoRA on SDXL: kohya files (SGM block names, `lora_te1_` / `lora_te2_`, alpha) and diffusers
files merged at generation, held against diffusers' load_lora_weights + fuse_lora; a LoRA
fine-tune of SDXL whose run folder loads in latentdiff and in diffusers alike."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from latentdiff import Pipeline
from latentdiff.sampling import make_scheduler

RANK, ALPHA = 4, 2.0
SIZE = dict(width=32, height=32)
# (kohya name, diffusers module, out, in): the tiny SDXL has 1 layer per block, so SGM's
# input_blocks_3 is down_blocks.1 and output_blocks_0 is up_blocks.0.
KOHYA_LAYERS = [
    ("lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q",
     "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 64, 64),
    ("lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k",
     "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 64, 72),
    ("lora_unet_middle_block_1_transformer_blocks_1_attn1_to_out_0",
     "unet", "mid_block.attentions.0.transformer_blocks.1.attn1.to_out.0", 64, 64),
    ("lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_v",
     "unet", "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", 64, 72),
    ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
     "text_encoder", "encoder.layers.0.self_attn.q_proj", 32, 32),
    ("lora_te1_text_model_encoder_layers_1_self_attn_out_proj",
     "text_encoder", "encoder.layers.1.self_attn.out_proj", 32, 32),
    ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
     "text_encoder_2", "encoder.layers.0.self_attn.q_proj", 40, 40),
    ("lora_te2_text_model_encoder_layers_2_self_attn_out_proj",
     "text_encoder_2", "encoder.layers.2.self_attn.out_proj", 40, 40),
]


def low_rank(seed: int, out_dim: int, in_dim: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(RANK, in_dim, generator=g) * 0.5, torch.randn(out_dim, RANK, generator=g) * 0.5


def kohya_sdxl_file(path, seed=0):
    """A kohya SDXL LoRA as sd-scripts writes it: SGM UNet names, both encoders, alpha."""
    tensors = {}
    for i, (key, _, _, out_dim, in_dim) in enumerate(KOHYA_LAYERS):
        down, up = low_rank(seed + i, out_dim, in_dim)
        tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(ALPHA)})
    save_file(tensors, path)
    return path


def diffusers_sdxl_file(path, seed=50):
    """diffusers / peft layout (lora_A / lora_B, no alpha: scale 1): a UNet layer and a layer of
    the second encoder."""
    (_, _, unet_layer, o1, i1), (_, _, te2_layer, o2, i2) = KOHYA_LAYERS[0], KOHYA_LAYERS[6]
    (d1, u1), (d2, u2) = low_rank(seed, o1, i1), low_rank(seed + 1, o2, i2)
    save_file({f"unet.{unet_layer}.lora_A.weight": d1, f"unet.{unet_layer}.lora_B.weight": u1,
               f"text_encoder_2.text_model.{te2_layer}.lora_A.weight": d2,
               f"text_encoder_2.text_model.{te2_layer}.lora_B.weight": u2}, path)
    return path


def weight(pipe, part: str, layer: str) -> torch.Tensor:
    module = getattr(pipe.components, part)
    return getattr(module, "text_model", module).get_submodule(layer).weight if part != "unet" else \
        module.get_submodule(layer).weight


def load(model, *loras):
    p = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", loras=[str(x) for x in loras])
    p.progress = False
    return p


@pytest.fixture(scope="module")
def base(tiny_sdxl):
    return load(tiny_sdxl)


def max_pixel_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


def diffusers_pixels(model, lora, scale, scheduler_config, prompt="a red apple", **lora_kw):
    from diffusers import StableDiffusionXLPipeline

    ref = StableDiffusionXLPipeline.from_pretrained(model, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(scheduler_config, "euler")
    ref.load_lora_weights(str(lora), **lora_kw)
    ref.fuse_lora(lora_scale=scale)
    return ref(prompt, num_inference_steps=3, guidance_scale=5.0, generator=[torch.Generator("cpu").manual_seed(4)],
               **SIZE).images[0]


def test_kohya_sdxl_lora_merges_every_part_and_matches_diffusers_pixels(tiny_sdxl, base, tmp_path):
    f = kohya_sdxl_file(tmp_path / "style.safetensors")
    ours = load(tiny_sdxl, f"{f}:0.6")
    for i, (_, part, layer, out_dim, in_dim) in enumerate(KOHYA_LAYERS):
        down, up = low_rank(i, out_dim, in_dim)
        expected = weight(base, part, layer) + 0.6 * (ALPHA / RANK) * up @ down
        assert torch.allclose(weight(ours, part, layer), expected, atol=1e-5), (part, layer)
    assert not any("lora" in n for n, _ in ours.components.unet.named_modules()), "fused and unloaded"
    mine = ours("a red apple", steps=3, guidance=5.0, seed=4, scheduler="euler", **SIZE)[0]
    theirs = diffusers_pixels(tiny_sdxl, f, 0.6, ours.components.scheduler_config)
    plain = base("a red apple", steps=3, guidance=5.0, seed=4, scheduler="euler", **SIZE)[0]
    assert np.asarray(mine).std() > 5 and max_pixel_diff(mine, plain) > 2, "the LoRA must change the image"
    assert max_pixel_diff(mine, theirs) <= 2


def test_stacked_sdxl_loras_add_up_and_scale_zero_is_the_base_exactly(tiny_sdxl, base, tmp_path):
    k, d = kohya_sdxl_file(tmp_path / "a.safetensors"), diffusers_sdxl_file(tmp_path / "b.safetensors")
    pipe = load(tiny_sdxl, f"{k}:0.5", f"{d}:-1.5")
    for i, seed in ((0, 50), (6, 51)):
        _, part, layer, out_dim, in_dim = KOHYA_LAYERS[i]
        (kd, ku), (dd, du) = low_rank(i, out_dim, in_dim), low_rank(seed, out_dim, in_dim)
        expected = weight(base, part, layer) + 0.5 * (ALPHA / RANK) * ku @ kd - 1.5 * du @ dd
        assert torch.allclose(weight(pipe, part, layer), expected, atol=1e-5), part
    zero = load(tiny_sdxl, f"{k}:0", f"{d}:0")("a red apple", steps=2, seed=3, **SIZE)[0]
    assert np.array_equal(np.asarray(zero), np.asarray(base("a red apple", steps=2, seed=3, **SIZE)[0]))


def test_a_lora_of_another_model_is_one_clear_error(tiny_sdxl, tmp_path, capsys):
    from test_cli import fails
    from test_lora_files import kohya_file

    sd1 = kohya_file(tmp_path / "sd1.safetensors")
    assert "does not fit this model: Target modules" in fails(capsys, "x", "--model", tiny_sdxl, "--lora", sd1)
