"""Tiny seeded Qwen-Image and Z-Image parts for tests and benchmarks: byte-level BPE tokenizers
trained offline with the `tokenizers` library (Qwen's chat special tokens kept, wrapped as
transformers' Qwen2Tokenizer), tiny Qwen2.5-VL and Qwen3 text models, and Qwen-Image's 3D causal
VAE at two downsamplings. The families' own builders (families/qwen_image.py, z_image.py) put them
together with their transformers."""

from __future__ import annotations

import torch

from latentdiff.families.sd import WORDS

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# What the tiny tokenizers are trained on besides WORDS: the chat frames the pipelines wrap prompts in.
FRAMES = [
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
]


def qwen_tokenizer(vocab_size: int = 400):
    """A Qwen2Tokenizer of a byte-level BPE trained on WORDS and the chat frames (pad <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=alphabet)
    tok.train_from_iterator(list(WORDS) + FRAMES, trainer)
    return Qwen2Tokenizer(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token=None)


def _text_config(tokenizer, width: int) -> dict:
    """The language model's sizes: two layers `width` wide, grouped-query heads as Qwen's."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=width // 4,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )


def tiny_qwen25vl(tokenizer, width: int = 32):
    """A tiny Qwen2_5_VLForConditionalGeneration (Qwen-Image's encoder; the vision tower unused by text)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {**_text_config(tokenizer, width), "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}}
    vision = dict(
        depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=width, fullatt_block_indexes=[0]
    )
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_qwen3(tokenizer, width: int = 32):
    """A tiny Qwen3Model (Z-Image's encoder)."""
    from transformers import Qwen3Config, Qwen3Model

    return Qwen3Model(Qwen3Config(**_text_config(tokenizer, width))).eval()


def tiny_qwen_vae(seed: int = 0):
    """A tiny AutoencoderKLQwenImage: 4 latent channels, factor 4, with per-channel latent statistics
    away from 0 and 1 so the tests see them applied."""
    from diffusers import AutoencoderKLQwenImage

    g = torch.Generator().manual_seed(seed)
    mean = (torch.randn(4, generator=g) * 0.5).tolist()
    std = (torch.rand(4, generator=g) + 0.5).tolist()
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=mean,
        latents_std=std,
    ).eval()


# Qwen/Qwen-Image's scheduler_config.json: an exponential shift between base_shift and max_shift,
# the schedule stretched to end at shift_terminal.
QWEN_IMAGE_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}


@torch.no_grad()
def louder_text(transformer, blocks) -> None:
    """Scale the text tokens' keys and values in `blocks` and the output projection, so prompts
    visibly steer a tiny random transformer (at random init the text moves its pixels by < 1/255,
    and a parity test could not tell one prompt, or one guidance scale, from another)."""
    for block in blocks:
        block.attn.add_k_proj.weight *= 3
        block.attn.add_v_proj.weight *= 24
    transformer.proj_out.weight *= 3


def pipeline_index(index: dict, cls_name: str, parts: dict) -> dict:
    """model_index.json of diffusers' pipeline `cls_name` with `parts` (name -> [library, class]),
    from the generic one (its diffusers version)."""
    keep = {k: index[k] for k in ("_diffusers_version",) if k in index}
    return {"_class_name": cls_name, **keep, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], **parts}


def qwen_image_index(index: dict) -> dict:
    return pipeline_index(
        index,
        "QwenImagePipeline",
        {
            "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
            "tokenizer": ["transformers", "Qwen2Tokenizer"],
            "transformer": ["diffusers", "QwenImageTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLQwenImage"],
        },
    )


def tiny_qwen_image(seed: int = 0) -> dict:
    """Seeded tiny Qwen-Image modules: the fields of models.components.Components, the transformer
    in `unet` (the denoiser's slot)."""
    from diffusers import QwenImageTransformer2DModel

    tokenizer = qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    louder_text(transformer, transformer.transformer_blocks)
    return dict(
        unet=transformer.eval(),
        vae=tiny_qwen_vae(seed),
        text_encoder=tiny_qwen25vl(tokenizer),
        tokenizer=tokenizer,
        scheduler_config=dict(QWEN_IMAGE_SCHEDULER),
    )


# Qwen3's chat template, as much of it as a one-message prompt with the generation prompt uses.
QWEN3_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
# Tongyi-MAI/Z-Image-Turbo's scheduler_config.json.
Z_IMAGE_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": False,
}


def z_image_index(index: dict) -> dict:
    return pipeline_index(
        index,
        "ZImagePipeline",
        {
            "text_encoder": ["transformers", "Qwen3Model"],
            "tokenizer": ["transformers", "Qwen2Tokenizer"],
            "transformer": ["diffusers", "ZImageTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )


def tiny_z_image(seed: int = 0) -> dict:
    """Seeded tiny Z-Image modules: a two-layer ZImageTransformer2DModel (one refiner layer each for
    text and image), Flux's tiny VAE, a tiny Qwen3 with a chat template."""
    from diffusers import ZImageTransformer2DModel

    from latentdiff.families.flux_tiny import FLUX_VAE, tiny_vae  # Z-Image decodes with Flux's VAE

    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN3_TEMPLATE
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # diffusers leaves the padding tokens uninitialised (torch.empty)
        for name in ("x_pad_token", "cap_pad_token"):
            getattr(transformer, name).normal_()
    return dict(
        unet=transformer.eval(),
        vae=tiny_vae(FLUX_VAE),
        text_encoder=tiny_qwen3(tokenizer),
        tokenizer=tokenizer,
        scheduler_config=dict(Z_IMAGE_SCHEDULER),
    )
