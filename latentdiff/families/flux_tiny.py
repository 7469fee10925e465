"""Tiny seeded Flux.1 models for tests and benchmarks, in FluxPipeline's layout: a one-block
FluxTransformer2DModel (64 input features: 16 latent channels in 2x2 patches), a 16-channel VAE
with Flux's shift and scaling factors, a tiny CLIP text model with our trained BPE tokenizer (as
the SD tiny models), and a tiny T5 encoder with a Unigram tokenizer trained offline with the
`tokenizers` library and wrapped as transformers' T5TokenizerFast (pad 0, </s> 1, <unk> 2, as
T5's), so FluxPipeline loads the same folder."""

from __future__ import annotations

import torch

from latentdiff.families.clip import clip_text_config
from latentdiff.families.sd import WORDS
from latentdiff.prompts.tokenizer import build_tokenizer

# The released configs' values (black-forest-labs/FLUX.1-dev and -schnell).
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
SCHEDULERS = {
    "flux-dev": {
        "base_image_seq_len": 256,
        "base_shift": 0.5,
        "max_image_seq_len": 4096,
        "max_shift": 1.15,
        "num_train_timesteps": 1000,
        "shift": 3.0,
        "use_dynamic_shifting": True,
    },
    "flux-schnell": {
        "base_image_seq_len": 256,
        "base_shift": 0.5,
        "max_image_seq_len": 4096,
        "max_shift": 1.15,
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
    },
}


def flux_index(index: dict, cls_name: str = "FluxPipeline") -> dict:
    """model_index.json of a FluxPipeline (or its Fill or Kontext pipeline), from the generic one (its diffusers version)."""
    keep = {k: index[k] for k in ("_diffusers_version",) if k in index}
    return {
        "_class_name": cls_name,
        **keep,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def t5_tokenizer(texts: list[str], vocab_size: int = 120):
    """A T5TokenizerFast of a Unigram model trained on `texts` (Metaspace pieces, </s> appended)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def tiny_vae(factors: dict, cls_name: str = "AutoencoderKL", latent_channels: int = 16):
    """A tiny AutoencoderKL (factor 2; or FLUX.2's `cls_name`) with a transformer family's shift and scaling `factors`."""
    import diffusers

    return getattr(diffusers, cls_name)(
        latent_channels=latent_channels,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **factors,
    ).eval()


def tiny_t5(tokenizer, d_model: int = 32):
    """A tiny two-layer T5 encoder (gated GELU, as T5 v1.1) for `tokenizer`, `d_model` wide."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def tiny_flux(variant: str = "flux-dev", seed: int = 0) -> dict:
    """Seeded tiny modules of `variant` (flux-dev: with the guidance embedding; flux-schnell without;
    flux-fill: dev's with the masked image's 16 latent channels and the 2x2 mask pixels beside the latents;
    flux-kontext: dev's in a FluxKontextPipeline folder):
    the fields of models.components.Components, the transformer in `unet` (the denoiser's slot)."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    schedule = "flux-schnell" if variant == "flux-schnell" else "flux-dev"  # Fill's and Kontext's are dev's
    clip_tok = build_tokenizer(WORDS, 200, 77)
    t5_tok = t5_tokenizer(WORDS)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64 + (64 + 16 if variant == "flux-fill" else 0),
        out_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=variant != "flux-schnell",
        axes_dims_rope=(4, 6, 6),
    )
    vae = tiny_vae(FLUX_VAE)
    clip = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_text_config(clip, clip_tok)))
    return dict(
        unet=transformer.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=clip_tok,
        text_encoder_2=tiny_t5(t5_tok),
        tokenizer_2=t5_tok,
        scheduler_config={"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULERS[schedule]},
        index={"_class_name": "FluxKontextPipeline"} if variant == "flux-kontext" else {},
    )
