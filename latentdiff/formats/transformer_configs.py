"""A transformer's diffusers config told from its original-layout tensors' shapes (a single file
carries none), for each transformer family: Flux.1, SD 3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image.

What shapes cannot say is taken from the released models: the rotary axes' split of the head's
width (Flux.1, Chroma and Qwen-Image: (1/8, 7/16, 7/16), 16, 56, 56 of 128; FLUX.2: four quarters;
Z-Image: (1/4, 3/8, 3/8)), SD3's head is 64 wide where no query-key norm shows it, SD3's default
image is 128 latent pixels where the position table is large enough, Qwen-Image's and Z-Image's
2x2 patches, Z-Image's rotary lengths. Files written by `latentdiff convert` carry their config,
so a model of other proportions keeps it.
"""

from __future__ import annotations

from latentdiff.errors import ModelError
from latentdiff.formats.transformer_keys import block_count

SD3_HEAD = 64  # every released SD3's attention head width
SD3_SAMPLE = 128  # the released SD3s' sample_size (1024 px images)
Z_IMAGE_AXES_LENS = (1536, 512, 512)  # Z-Image-Turbo's rotary table lengths (caption, height, width)


def _shape(shapes: dict, name: str, where) -> list[int]:
    if name not in shapes:
        raise ModelError(f"{where} lacks the tensor {name}, which every such transformer has")
    return list(shapes[name])


def _axes(head: int, parts: tuple[int, ...], where) -> list[int]:
    """The rotary axes' widths of a `head` wide head split in these 16ths, as the released models split 128."""
    axes = [head * p // 16 for p in parts]
    if sum(axes) != head or any(a % 2 for a in axes):
        raise ModelError(
            f"{where}: a head {head} wide has no known rotary split ({[128 * p // 16 for p in parts]} of 128)"
        )
    return axes


def _flux_like(shapes: dict, where) -> dict:
    """What Flux.1, Chroma and FLUX.2 files show alike: widths, heads and block counts."""
    width, in_channels = _shape(shapes, "img_in.weight", where)
    head = _shape(shapes, "double_blocks.0.img_attn.norm.query_norm.scale", where)[0]
    return dict(
        patch_size=1,
        in_channels=in_channels,
        out_channels=_shape(shapes, "final_layer.linear.weight", where)[0],
        num_layers=block_count(shapes, "double_blocks"),
        num_single_layers=block_count(shapes, "single_blocks"),
        attention_head_dim=head,
        num_attention_heads=width // head,
        joint_attention_dim=_shape(shapes, "txt_in.weight", where)[1],
    )


def flux_config(shapes: dict, where) -> dict:
    """FluxTransformer2DModel's config for these original-layout shapes (name -> shape)."""
    base = _flux_like(shapes, where)
    return dict(
        _class_name="FluxTransformer2DModel",
        **base,
        pooled_projection_dim=_shape(shapes, "vector_in.in_layer.weight", where)[1],
        guidance_embeds="guidance_in.in_layer.weight" in shapes,
        axes_dims_rope=_axes(base["attention_head_dim"], (2, 7, 7), where),
    )


def chroma_config(shapes: dict, where) -> dict:
    """ChromaTransformer2DModel's: Flux.1's without its modulations, with the approximator's sizes."""
    base = _flux_like(shapes, where)
    hidden, channels = _shape(shapes, "distilled_guidance_layer.in_proj.weight", where)
    return dict(
        _class_name="ChromaTransformer2DModel",
        **base,
        axes_dims_rope=_axes(base["attention_head_dim"], (2, 7, 7), where),
        approximator_num_channels=channels,
        approximator_hidden_dim=hidden,
        approximator_layers=block_count(shapes, "distilled_guidance_layer.layers"),
    )


def flux2_config(shapes: dict, where) -> dict:
    """Flux2Transformer2DModel's: no biases, a SwiGLU MLP whose ratio its first layer shows."""
    base = _flux_like(shapes, where)
    width = base["attention_head_dim"] * base["num_attention_heads"]
    return dict(
        _class_name="Flux2Transformer2DModel",
        **base,
        timestep_guidance_channels=_shape(shapes, "time_in.in_layer.weight", where)[1],
        mlp_ratio=_shape(shapes, "double_blocks.0.img_mlp.0.weight", where)[0] / (2 * width),
        axes_dims_rope=_axes(base["attention_head_dim"], (4, 4, 4, 4), where),
        guidance_embeds="guidance_in.in_layer.weight" in shapes,
    )


def qwen_image_config(shapes: dict, where) -> dict:
    """QwenImageTransformer2DModel's (its file has diffusers' names)."""
    width, in_channels = _shape(shapes, "img_in.weight", where)
    head = _shape(shapes, "transformer_blocks.0.attn.norm_q.weight", where)[0]
    return dict(
        _class_name="QwenImageTransformer2DModel",
        patch_size=2,
        in_channels=in_channels,
        out_channels=_shape(shapes, "proj_out.weight", where)[0] // 4,
        num_layers=block_count(shapes, "transformer_blocks"),
        attention_head_dim=head,
        num_attention_heads=width // head,
        joint_attention_dim=_shape(shapes, "txt_in.weight", where)[1],
        axes_dims_rope=_axes(head, (2, 7, 7), where),
        use_additional_t_cond="time_text_embed.addition_t_embedding.weight" in shapes,
    )


def z_image_config(shapes: dict, where) -> dict:
    """ZImageTransformer2DModel's (2x2 patches of one frame, as Z-Image's)."""
    dim, patch_values = _shape(shapes, "x_embedder.weight", where)
    head = _shape(shapes, "layers.0.attention.q_norm.weight", where)[0]
    return dict(
        _class_name="ZImageTransformer2DModel",
        all_patch_size=[2],
        all_f_patch_size=[1],
        in_channels=patch_values // 4,
        dim=dim,
        n_layers=block_count(shapes, "layers"),
        n_refiner_layers=block_count(shapes, "noise_refiner"),
        n_heads=dim // head,
        n_kv_heads=dim // head,
        cap_feat_dim=_shape(shapes, "cap_embedder.1.weight", where)[1],
        axes_dims=_axes(head, (4, 6, 6), where),
        axes_lens=list(Z_IMAGE_AXES_LENS),
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


CONFIGS = {
    "flux": flux_config,
    "sd3": sd3_config,
    "chroma": chroma_config,
    "flux2": flux2_config,
    "qwen-image": qwen_image_config,
    "z-image": z_image_config,
}
CLASSES = {
    "flux": "FluxTransformer2DModel",
    "sd3": "SD3Transformer2DModel",
    "chroma": "ChromaTransformer2DModel",
    "flux2": "Flux2Transformer2DModel",
    "qwen-image": "QwenImageTransformer2DModel",
    "z-image": "ZImageTransformer2DModel",
}
_FLUX_VAE = "the 16-channel VAE (ae.safetensors)"
NEEDS = {  # what a transformer file of each family still needs, and a diffusers folder holding it
    "flux": f"the CLIP-L and T5-XXL text encoders with their tokenizers and {_FLUX_VAE}",
    "sd3": "the CLIP-L and CLIP-G text encoders (T5-XXL optional) with their tokenizers and SD3's VAE",
    "chroma": f"the T5-XXL text encoder with its tokenizer and {_FLUX_VAE}",
    "flux2": "its text encoder (Qwen3 for klein, Mistral Small 3.1 for dev) with its tokenizer and FLUX.2's VAE",
    "qwen-image": "the Qwen2.5-VL-7B text encoder with its tokenizer and Qwen-Image's VAE (qwen_image_vae.safetensors)",
    "z-image": f"the Qwen3-4B text encoder with its tokenizer and {_FLUX_VAE}",
}
EXAMPLES = {
    "flux": "black-forest-labs/FLUX.1-dev",
    "sd3": "stabilityai/stable-diffusion-3.5-medium",
    "chroma": "lodestones/Chroma1-HD",
    "flux2": "black-forest-labs/FLUX.2-klein-4B",
    "qwen-image": "Qwen/Qwen-Image",
    "z-image": "Tongyi-MAI/Z-Image-Turbo",
}
