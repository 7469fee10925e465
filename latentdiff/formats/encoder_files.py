"""Text encoder and VAE files as ComfyUI users keep them (models/text_encoders or models/clip:
`clip_l.safetensors`, `clip_g.safetensors`, `t5xxl_fp16.safetensors`, `t5xxl_fp8_e4m3fn_scaled.safetensors`,
`qwen_3_4b.safetensors`; models/vae: `ae.safetensors`), told apart by their tensors' names and shapes,
not their file names, and built with configs told from those shapes. What shapes cannot say is the
released models': CLIP's heads are 64 wide, CLIP-L computes quick_gelu and CLIP-G gelu, T5 v1.1 is
gated-gelu with 128 as its relative distance, Qwen3-4B's rotary base is 1e6, Flux.1's VAE groups
its norms by 32. Qwen2.5-VL (Qwen-Image's encoder) is recognised but not built here.
"""

from __future__ import annotations

import re
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.formats.gguf_file import is_gguf, read_gguf_encoder
from latentdiff.formats.transformer_parts import load_into, upcast_fp8
from latentdiff.formats.vae import vae_from_state_dict
from latentdiff.models.weights import load_state_dict

T5_Q = "encoder.block.0.layer.0.SelfAttention.q.weight"
CLIP_TOKENS = "text_model.embeddings.token_embedding.weight"
VAE_OUT = "encoder.conv_out.weight"  # 2 x the latent channels (mean and log-variance)
QWEN_QNORM = "layers.0.self_attn.q_norm.weight"  # Qwen3's per-head query norm (Qwen2.5 has none)
CLIP_G_WIDTH = 1024  # CLIP-L is 768 wide, OpenCLIP's CLIP-G 1280: a CLIP this wide or wider is CLIP-G
LABELS = {
    "clip_l": "CLIP-L",
    "clip_g": "CLIP-G",
    "t5xxl": "T5-XXL",
    "qwen3": "Qwen3 (Qwen3-4B)",
    "qwen25vl": "Qwen2.5-VL",
    "vae16": "16-channel VAE",
}


def _strip(name: str) -> str:
    """A name without the prefixes some exporters put before a text encoder's or VAE's tensors."""
    name = re.sub(r"^text_encoders\.[a-z0-9_]+\.transformer\.", "", name)
    return name.removeprefix("first_stage_model.").removeprefix("vae.").removeprefix("model.")


def kind_of(shapes: dict) -> str | None:
    """ "clip_l", "clip_g", "t5xxl" or "vae16" for a file's tensor shapes (name -> shape), else None."""
    names = {_strip(k): v for k, v in shapes.items()}
    if T5_Q in names:
        return "t5xxl"
    if CLIP_TOKENS in names:
        return "clip_g" if names[CLIP_TOKENS][1] >= CLIP_G_WIDTH else "clip_l"
    if QWEN_QNORM in names:
        return "qwen3"
    if "layers.0.self_attn.q_proj.bias" in names and any(k.startswith("visual.") for k in names):
        return "qwen25vl"
    if "decoder.conv_out.weight" in names and VAE_OUT in names and names[VAE_OUT][0] == 32:
        return "vae16"
    return None


def _count(names, pattern: str) -> int:
    return len({m.group(1) for k in names if (m := re.match(pattern, k))})


def clip_config(shapes: dict, kind: str) -> dict:
    """CLIPTextConfig arguments for CLIP-L or CLIP-G tensors of these shapes."""
    vocab, hidden = shapes[CLIP_TOKENS]
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=_count(shapes, r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=hidden // 64,
        max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
        hidden_act="quick_gelu" if kind == "clip_l" else "gelu",
        projection_dim=shapes.get("text_projection.weight", [hidden])[0],
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def t5_config(shapes: dict) -> dict:
    """T5Config arguments (an encoder of T5 v1.1, as T5-XXL) for tensors of these shapes."""
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    embed = shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"]
    return dict(
        vocab_size=embed[0],
        d_model=embed[1],
        d_kv=shapes[T5_Q][0] // heads,
        d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
        num_layers=_count(shapes, r"encoder\.block\.(\d+)\."),
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        layer_norm_epsilon=1e-6,
    )


def qwen3_config(shapes: dict) -> dict:
    """Qwen3Config arguments (Qwen3-4B's proportions as read) for tensors of these shapes."""
    vocab, hidden = shapes["embed_tokens.weight"]
    head = shapes[QWEN_QNORM][0]
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=shapes["layers.0.mlp.gate_proj.weight"][0],
        num_hidden_layers=_count(shapes, r"layers\.(\d+)\."),
        num_attention_heads=shapes["layers.0.self_attn.q_proj.weight"][0] // head,
        num_key_value_heads=shapes["layers.0.self_attn.k_proj.weight"][0] // head,
        head_dim=head,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
    )


def vae_config(shapes: dict, factors: dict) -> dict:
    """AutoencoderKL's config for a VAE of these shapes in the original layout (ae.safetensors) or diffusers'
    (SD3's vae/diffusion_pytorch_model.safetensors kept as a file), with the family's scaling and shift `factors`."""
    down, block = (
        ("down_blocks", "resnets") if any(k.startswith("encoder.down_blocks.") for k in shapes) else ("down", "block")
    )
    levels = _count(shapes, rf"encoder\.{down}\.(\d+)\.")
    return dict(
        in_channels=shapes["encoder.conv_in.weight"][1],
        out_channels=shapes["decoder.conv_out.weight"][0],
        latent_channels=shapes[VAE_OUT][0] // 2,
        block_out_channels=[shapes[f"encoder.{down}.{i}.{block}.0.conv1.weight"][0] for i in range(levels)],
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=_count(shapes, rf"encoder\.{down}\.0\.{block}\.(\d+)\."),
        norm_num_groups=32,
        act_fn="silu",
        use_quant_conv="quant_conv.weight" in shapes,
        use_post_quant_conv="post_quant_conv.weight" in shapes,
        force_upcast=True,
        **factors,
    )


def build_encoder(path: Path, kind: str, allow_pickle: bool = False, projection: bool = False):
    """The transformers text model of an encoder file of `kind` (fp8 upcast; GGUF dequantized, its config told
    from its tensors' shapes as a safetensors file's, T5 v1.1's gated-gelu whatever the file says); `projection`: CLIP-L with its
    text projection (SD 3's pooled vector; Flux.1 takes the pooler output)."""
    import transformers as tf

    tensors = read_gguf_encoder(path) if is_gguf(path) else upcast_fp8(load_state_dict(path, allow_pickle))
    sd = {_strip(k): v for k, v in tensors.items() if k != "lm_head.weight"}
    shapes = {k: list(v.shape) for k, v in sd.items()}
    try:
        if kind == "t5xxl":
            model = tf.T5EncoderModel(tf.T5Config(**t5_config(shapes)))
        elif kind == "qwen3":
            model = tf.Qwen3Model(tf.Qwen3Config(**qwen3_config(shapes)))
        elif kind in ("clip_l", "clip_g"):
            cls = tf.CLIPTextModelWithProjection if kind == "clip_g" or projection else tf.CLIPTextModel
            model = cls(tf.CLIPTextConfig(**clip_config(shapes, kind)))
        else:
            raise ModelError(f"{path} is a {LABELS[kind]} text encoder, which is read from a diffusers folder only")
    except KeyError as e:
        raise ModelError(f"{path} looks like {LABELS[kind]} but lacks the tensor {e}") from None
    if kind == "t5xxl" and "shared.weight" not in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    sd = {k: v for k, v in sd.items() if not (kind == "clip_l" and not projection and k == "text_projection.weight")}
    load_into(model, sd, path)
    return model.eval().requires_grad_(False)


def build_vae(path: Path, factors: dict, allow_pickle: bool = False):
    """Flux.1's (or SD3's) 16-channel VAE of a file (either layout), with the family's `factors`."""

    sd = upcast_fp8(load_state_dict(path, allow_pickle))
    shapes = {_strip(k): list(v.shape) for k, v in sd.items()}
    try:
        config = vae_config(shapes, factors)
    except KeyError as e:
        raise ModelError(f"{path} looks like a VAE but lacks the tensor {e}") from None
    return vae_from_state_dict(sd, config, path)
