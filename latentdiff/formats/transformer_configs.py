"""A transformer's diffusers config told from its original-layout tensors' shapes (a single file
carries none), for Flux.1's FluxTransformer2DModel and SD 3/3.5's SD3Transformer2DModel.

What shapes cannot say is taken from the released models: Flux's rotary axes split the head's
width as (1/8, 7/16, 7/16) (16, 56, 56 of 128), SD3's head is 64 wide where no query-key norm
shows it, and SD3's default image is 128 latent pixels where the position table is large enough.
Files written by `latentdiff convert` carry their config, so a model of other proportions keeps it.
"""

from __future__ import annotations

from latentdiff.errors import ModelError
from latentdiff.formats.transformer_keys import block_count

SD3_HEAD = 64  # every released SD3's attention head width
SD3_SAMPLE = 128  # the released SD3s' sample_size (1024 px images)


def _shape(shapes: dict, name: str, where) -> list[int]:
    if name not in shapes:
        raise ModelError(f"{where} lacks the tensor {name}, which every such transformer has")
    return list(shapes[name])


def flux_config(shapes: dict, where) -> dict:
    """FluxTransformer2DModel's config for these original-layout shapes (name -> shape)."""
    width, in_channels = _shape(shapes, "img_in.weight", where)
    head = _shape(shapes, "double_blocks.0.img_attn.norm.query_norm.scale", where)[0]
    axes = (head // 8, 7 * head // 16, 7 * head // 16)
    if sum(axes) != head or any(a % 2 for a in axes):
        raise ModelError(f"{where}: a Flux head {head} wide has no known rotary split (16, 56, 56 of 128 is Flux.1's)")
    return dict(
        _class_name="FluxTransformer2DModel",
        patch_size=1,
        in_channels=in_channels,
        out_channels=_shape(shapes, "final_layer.linear.weight", where)[0],
        num_layers=block_count(shapes, "double_blocks"),
        num_single_layers=block_count(shapes, "single_blocks"),
        attention_head_dim=head,
        num_attention_heads=width // head,
        joint_attention_dim=_shape(shapes, "txt_in.weight", where)[1],
        pooled_projection_dim=_shape(shapes, "vector_in.in_layer.weight", where)[1],
        guidance_embeds="guidance_in.in_layer.weight" in shapes,
        axes_dims_rope=list(axes),
    )


def sd3_config(shapes: dict, where) -> dict:
    """SD3Transformer2DModel's config for these original-layout shapes (name -> shape)."""
    width, in_channels, patch, _ = _shape(shapes, "x_embedder.proj.weight", where)
    positions = _shape(shapes, "pos_embed", where)[1]
    side = round(positions**0.5)
    qk = "joint_blocks.0.x_block.attn.ln_q.weight"
    head = shapes[qk][0] if qk in shapes else SD3_HEAD
    caption, joint = _shape(shapes, "context_embedder.weight", where)
    n = block_count(shapes, "joint_blocks")
    return dict(
        _class_name="SD3Transformer2DModel",
        sample_size=SD3_SAMPLE if side >= SD3_SAMPLE else side,
        patch_size=patch,
        in_channels=in_channels,
        out_channels=_shape(shapes, "final_layer.linear.weight", where)[0] // (patch * patch),
        num_layers=n,
        attention_head_dim=head,
        num_attention_heads=width // head,
        joint_attention_dim=joint,
        caption_projection_dim=caption,
        pooled_projection_dim=_shape(shapes, "y_embedder.mlp.0.weight", where)[1],
        pos_embed_max_size=side,
        dual_attention_layers=[i for i in range(n) if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes],
        qk_norm="rms_norm" if qk in shapes else None,
    )


CONFIGS = {"flux": flux_config, "sd3": sd3_config}
CLASSES = {"flux": "FluxTransformer2DModel", "sd3": "SD3Transformer2DModel"}
