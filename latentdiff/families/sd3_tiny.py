"""Tiny seeded SD 3 / 3.5 models for tests and benchmarks, in StableDiffusion3Pipeline's layout:
a two-block SD3Transformer2DModel (2x2 patches of 16 latent channels; SD 3.5 medium's dual-attention
block and SD 3.5's RMS query-key norm where the variant has them), a 16-channel VAE with SD3's
shift and scaling factors, two tiny CLIP text models with projections (CLIP-L and CLIP-G, of
different widths so the joint context is padded as the released one is) with our trained BPE
tokenizers, and a tiny T5 encoder with the Unigram tokenizer Flux's tiny models use, so
StableDiffusion3Pipeline loads the same folder."""

from __future__ import annotations

import torch

from latentdiff.families.clip import clip_text_config
from latentdiff.families.flux_tiny import t5_tokenizer, tiny_t5, tiny_vae
from latentdiff.families.sd import WORDS
from latentdiff.prompts.tokenizer import build_tokenizer

# The released configs' values (stabilityai/stable-diffusion-3-medium-diffusers, -3.5-medium, -3.5-large).
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
# What sets the variants apart in the transformer's config (the tiny models keep it).
ARCHITECTURE = {
    "sd3.5-medium": {"dual_attention_layers": (0,), "qk_norm": "rms_norm"},  # MMDiT-X
    "sd3.5-large": {"qk_norm": "rms_norm"},
    "sd3-medium": {},
}


def sd3_index(components, index: dict) -> dict:
    """model_index.json of a StableDiffusion3Pipeline, from the generic one (its diffusers version);
    a model without its T5 encoder says so with nulls, as diffusers writes it."""
    keep = {k: index[k] for k in ("_diffusers_version",) if k in index}
    t5 = components.text_encoder_3 is not None
    return {
        "_class_name": "StableDiffusion3Pipeline",
        **keep,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_3": ["transformers", "T5EncoderModel"] if t5 else [None, None],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": ["transformers", "T5TokenizerFast"] if t5 else [None, None],
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def tiny_clips() -> dict:
    """CLIP-L and CLIP-G stand-ins: 12 and 20 wide (32 together, padded to T5's 40), 16-wide projections."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok, tok2 = build_tokenizer(WORDS, 200, 77), build_tokenizer(WORDS, 200, 77)
    tok2.pad_token = "!"  # OpenCLIP's tokenizer pads with "!", not with EOS
    parts = {}
    for name, tokenizer, width, act in (("", tok, 12, "quick_gelu"), ("_2", tok2, 20, "gelu")):
        section = dict(hidden_size=width, intermediate_size=37, num_attention_heads=2, num_hidden_layers=3,
                       projection_dim=16, hidden_act=act)  # fmt: skip
        config = CLIPTextConfig(**clip_text_config(section, tokenizer))
        parts[f"text_encoder{name}"] = CLIPTextModelWithProjection(config).eval()
        parts[f"tokenizer{name}"] = tokenizer
    return parts


def tiny_sd3(variant: str = "sd3.5-medium", seed: int = 0) -> dict:
    """Seeded tiny modules of `variant`: the fields of models.components.Components, the transformer
    in `unet` (the denoiser's slot), T5 in `text_encoder_3`."""
    from diffusers import SD3Transformer2DModel

    t5_tok = t5_tokenizer(WORDS)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=40,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        out_channels=16,
        pos_embed_max_size=32,
        **ARCHITECTURE[variant],
    )
    return dict(
        unet=transformer.eval(),
        vae=tiny_vae(SD3_VAE),
        **tiny_clips(),
        text_encoder_3=tiny_t5(t5_tok, d_model=40),
        tokenizer_3=t5_tok,
        scheduler_config=dict(SCHEDULER),
    )
