"""Tiny seeded FLUX.2 klein models for tests and benchmarks, in Flux2KleinPipeline's layout: a
one-block Flux2Transformer2DModel (4-axis rotary ids; 16 input features: 4 latent channels in 2x2
patches), a tiny AutoencoderKLFlux2 (its batch norm over the patched latents given seeded running
statistics, so the normalisation is not the identity), and a tiny Qwen3 causal LM (28 layers, so the
released encoder's hidden layers 9, 18 and 27 exist) with a byte-level BPE tokenizer trained
offline with the `tokenizers` library and wrapped as transformers' Qwen2 tokenizer with a ChatML
template (as Qwen3's), so Flux2KleinPipeline loads the same folder."""

from __future__ import annotations

import torch

from latentdiff.families.flux_tiny import tiny_vae
from latentdiff.families.sd import WORDS

# The released configs' values (black-forest-labs/FLUX.2-klein-4B, FLUX.2-dev).
SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
# Qwen3's chat template, cut to what one user turn with thinking off needs.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def flux2_index(index: dict) -> dict:
    """model_index.json of a Flux2KleinPipeline, from the generic one (its diffusers version, is_distilled)."""
    keep = {k: index[k] for k in ("_diffusers_version", "is_distilled") if k in index}
    return {
        "_class_name": "Flux2KleinPipeline",
        "is_distilled": False,
        **keep,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }


def qwen_tokenizer(texts: list[str], vocab_size: int = 300):
    """A Qwen2 tokenizer of a byte-level BPE trained on `texts`, with ChatML's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=alphabet))  # fmt: skip
    out = Qwen2TokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None)
    out.chat_template = CHAT_TEMPLATE
    return out


def tiny_qwen3(tokenizer, hidden: int = 16):
    """A tiny Qwen3 causal LM for `tokenizer`: 28 layers `hidden` wide (the pipeline reads layers 9, 18, 27)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=24,
        num_hidden_layers=28,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config).eval()


def tiny_flux2_vae(latent_channels: int = 4):
    """A tiny AutoencoderKLFlux2 (factor 2) whose batch norm holds seeded statistics, as a trained one would."""
    vae = tiny_vae({}, "AutoencoderKLFlux2", latent_channels)
    n = vae.bn.running_mean.numel()
    vae.bn.running_mean.copy_(torch.randn(n) * 0.3)
    vae.bn.running_var.copy_(torch.rand(n) + 0.5)
    return vae.eval()


def tiny_flux2(variant: str = "flux2-klein", seed: int = 0) -> dict:
    """Seeded tiny modules of `variant` (flux2-klein): the fields of models.components.Components,
    the transformer in `unet` (the denoiser's slot)."""
    from diffusers import Flux2Transformer2DModel

    tokenizer = qwen_tokenizer(WORDS)
    torch.manual_seed(seed)
    encoder = tiny_qwen3(tokenizer)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * encoder.config.hidden_size,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    return dict(
        unet=transformer.eval(),
        vae=tiny_flux2_vae(),
        text_encoder=encoder,
        tokenizer=tokenizer,
        scheduler_config=dict(SCHEDULER),
    )
