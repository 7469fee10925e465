"""A ComfyUI install in miniature for the tests of ComfyUI's models folder as --components
(tests/formats/test_comfy_components.py, tests/inputs/test_fuzz_comfy_models.py): a Flux.1
transformer file in models/diffusion_models, CLIP-L (named as the user likes) in models/clip, T5-XXL
in ComfyUI's scaled fp8 in models/text_encoders, ae.safetensors in models/vae, and T5's tokenizer
where ComfyUI keeps it (comfy/text_encoders/t5_tokenizer); beside them a Z-Image transformer file
and Qwen3 in models/text_encoders, Qwen's tokenizer in comfy/text_encoders/qwen25_tokenizer."""

from pathlib import Path

import torch

FP8 = torch.float8_e4m3fn


def tiny_parts(seed: int = 5):
    """Tiny parts in the released proportions the files are read with (CLIP heads 64 wide, T5 v1.1's
    gated-gelu, the VAE's norms in groups of 32, Flux's rotary split), with the shipped CLIP tokenizer."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from latentdiff.families.flux_tiny import t5_tokenizer
    from latentdiff.families.released import clip_tokenizer
    from latentdiff.families.sd import WORDS

    torch.manual_seed(seed)
    t5_tok = t5_tokenizer(WORDS)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=1, hidden_act="quick_gelu", projection_dim=64,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                 feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                                 tie_word_embeddings=False, layer_norm_epsilon=1e-6))  # fmt: skip
    vae = AutoencoderKL(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=16,
                        norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                        scaling_factor=0.3611, shift_factor=0.1159)  # fmt: skip
    transformer = FluxTransformer2DModel(in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
                                         num_attention_heads=1, joint_attention_dim=32, pooled_projection_dim=64,
                                         guidance_embeds=True, axes_dims_rope=(4, 14, 14))  # fmt: skip
    return dict(unet=transformer.eval(), vae=vae.eval(), text_encoder=clip.eval(), tokenizer=clip_tokenizer(False),
                text_encoder_2=t5.eval(), tokenizer_2=t5_tok)  # fmt: skip


def scaled_fp8(sd: dict) -> dict:
    """ComfyUI's scaled fp8 (t5xxl_fp8_e4m3fn_scaled.safetensors): each matrix over its scale."""
    out = {"scaled_fp8": torch.zeros(0, dtype=FP8)}
    for k, v in sd.items():
        scale = torch.tensor(0.5) if v.ndim == 2 and k.endswith(".weight") else None
        out[k] = (v / scale if scale is not None else v).to(FP8)
        if scale is not None:
            out[k.removesuffix("weight") + "scale_weight"] = scale
    return out


def z_image_parts(seed: int = 6) -> dict:
    """A tiny Z-Image transformer in the released proportions (rotary split, lengths) and Qwen3 (its
    rotary base 1e6, tied embeddings, as Qwen3-4B) with a tiny Qwen tokenizer."""
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    from latentdiff.families.qwen_tiny import QWEN3_TEMPLATE, Z_IMAGE_SCHEDULER, qwen_tokenizer

    tok = qwen_tokenizer()
    torch.manual_seed(seed)
    qwen3 = Qwen3Model(Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                                   rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=True,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None))  # fmt: skip
    transformer = ZImageTransformer2DModel(in_channels=16, dim=32, n_layers=1, n_refiner_layers=1, n_heads=2,
                                           n_kv_heads=2, cap_feat_dim=32, axes_dims=[4, 6, 6],
                                           axes_lens=[1536, 512, 512])  # fmt: skip
    with torch.no_grad():  # diffusers leaves the padding tokens uninitialised
        transformer.x_pad_token.normal_()
        transformer.cap_pad_token.normal_()
    tok.chat_template = QWEN3_TEMPLATE
    return dict(
        unet=transformer.eval(), text_encoder=qwen3.eval(), tokenizer=tok, scheduler_config=dict(Z_IMAGE_SCHEDULER)
    )


def write_comfy_tree(root: Path) -> tuple[dict, Path]:
    """The tree under `root` (ComfyUI's folder): (the Flux.1 parts written, its transformer file); the
    Z-Image parts (z_image_parts) written beside them."""
    from safetensors.torch import save_file

    from latentdiff.formats.ldm_keys import vae_to_ldm
    from latentdiff.formats.transformer_keys import to_original

    parts = tiny_parts()
    models = root / "models"
    for d in ("text_encoders", "clip", "vae", "diffusion_models"):
        (models / d).mkdir(parents=True)
    parts["tokenizer_2"].save_pretrained(str(root / "comfy" / "text_encoders" / "t5_tokenizer"))
    clip = {"text_model." + k: v for k, v in parts["text_encoder"].state_dict().items()}
    save_file(clip, str(models / "clip" / "my_clip.safetensors"))  # names are the user's; tensors tell
    t5 = scaled_fp8(parts["text_encoder_2"].state_dict())
    save_file(t5, str(models / "text_encoders" / "t5xxl_fp8_e4m3fn_scaled.safetensors"))
    ldm = vae_to_ldm(parts["vae"].state_dict(), dict(parts["vae"].config))
    vae = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm.items()}
    save_file(vae, str(models / "vae" / "ae.safetensors"))
    f = models / "diffusion_models" / "flux1-dev.safetensors"
    save_file({k: v.contiguous() for k, v in to_original(parts["unet"].state_dict(), "flux").items()}, str(f))
    z = z_image_parts()
    tok = z["tokenizer"]
    tok.chat_template = None  # ComfyUI's tokenizer files carry none
    tok.save_pretrained(str(root / "comfy" / "text_encoders" / "qwen25_tokenizer"))
    qwen3 = {"model." + k: v for k, v in z["text_encoder"].state_dict().items()}  # as ComfyUI's qwen_3_4b
    save_file(qwen3, str(models / "text_encoders" / "qwen_3_4b.safetensors"))
    z_file = models / "diffusion_models" / "z_image_turbo_bf16.safetensors"
    save_file({k: v.contiguous() for k, v in to_original(z["unet"].state_dict(), "z-image").items()}, str(z_file))
    return parts, f
