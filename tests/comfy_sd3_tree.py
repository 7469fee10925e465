"""A tiny ComfyUI install holding SD 3.5 medium's files (tests/formats/test_comfy_sd3.py and the fuzzing of its
parts): clip_l/clip_g in models/clip, t5xxl_fp16 in models/text_encoders, the VAE in models/vae (in diffusers'
layout, as SD 3.5's repo ships it), the transformer in models/diffusion_models, T5's tokenizer where ComfyUI keeps
it. The tiny CLIPs are 64 and 128 wide (CLIP's heads are 64 wide): tests lower the CLIP-G width threshold
(`SMALL_CLIP_G`) from the released models' (768 against 1280)."""

from pathlib import Path

import torch

SMALL_CLIP_G = 100  # latentdiff.formats.encoder_files.CLIP_G_WIDTH for these CLIPs
PARTS = [
    "models/clip/clip_l.safetensors",
    "models/clip/clip_g.safetensors",
    "models/text_encoders/t5xxl_fp16.safetensors",
    "models/vae/sd3.5_vae.safetensors",
]
TRANSFORMER = "models/diffusion_models/sd3.5_medium.safetensors"


def _parts(seed: int = 7) -> dict:
    """Tiny SD 3.5 medium parts in the proportions the files are read with, with the shipped CLIP tokenizers."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from latentdiff.families.flux_tiny import t5_tokenizer
    from latentdiff.families.released import clip_tokenizer
    from latentdiff.families.sd import WORDS
    from latentdiff.families.sd3_tiny import SCHEDULER, SD3_VAE

    torch.manual_seed(seed)
    clips = {}
    for slot, width, act in (("text_encoder", 64, "quick_gelu"), ("text_encoder_2", 128, "gelu")):
        config = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=37, num_hidden_layers=1,
                                num_attention_heads=width // 64, hidden_act=act, projection_dim=16,
                                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)  # fmt: skip
        clips[slot] = CLIPTextModelWithProjection(config).eval()
    t5_tok = t5_tokenizer(WORDS)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=256, d_kv=64, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                                 tie_word_embeddings=False, layer_norm_epsilon=1e-6))  # fmt: skip
    vae = AutoencoderKL(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=16,
                        norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False, **SD3_VAE)  # fmt: skip
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=256, caption_projection_dim=32,
                                        pooled_projection_dim=32, out_channels=16, pos_embed_max_size=32,
                                        dual_attention_layers=(0,), qk_norm="rms_norm")  # fmt: skip
    return dict(
        unet=transformer.eval(), vae=vae.eval(), **clips, tokenizer=clip_tokenizer(False),
        tokenizer_2=clip_tokenizer(True), text_encoder_3=t5.eval(), tokenizer_3=t5_tok, scheduler_config=dict(SCHEDULER),
    )  # fmt: skip


def write_sd3_tree(root: Path) -> dict:
    """The tree under `root` (ComfyUI's folder); the parts written (its T5 as the fp16 file holds it)."""
    from safetensors.torch import save_file

    from latentdiff.formats.transformer_keys import to_original

    parts, models = _parts(), root / "models"
    for d in ("clip", "text_encoders", "vae", "diffusion_models"):
        (models / d).mkdir(parents=True)
    parts["tokenizer_3"].save_pretrained(str(root / "comfy" / "text_encoders" / "t5_tokenizer"))
    for slot, name in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")):
        save_file(parts[slot].state_dict(), str(models / "clip" / f"{name}.safetensors"))
    t5 = {k: v.half() for k, v in parts["text_encoder_3"].state_dict().items() if k != "shared.weight"}
    save_file(t5, str(models / "text_encoders" / "t5xxl_fp16.safetensors"))
    parts["text_encoder_3"].load_state_dict({k: v.float() for k, v in t5.items()}, strict=False)  # as the file holds it
    save_file(parts["vae"].state_dict(), str(models / "vae" / "sd3.5_vae.safetensors"))
    original = to_original(parts["unet"].state_dict(), "sd3")
    save_file({k: v.contiguous() for k, v in original.items()}, str(root / TRANSFORMER))
    return parts
