"""The original key layouts of the transformer families' single files, one table per family, read
both ways by formats/transformer_keys.py: Black Forest Labs' Flux.1 (`flux1-dev.safetensors`) and
FLUX.2 (`flux2-klein-4b.safetensors`), Stability's SD 3/3.5, lodestones' Chroma, Tongyi's Z-Image
(`z_image_turbo_bf16.safetensors`), Qwen-Image as ComfyUI's `models/diffusion_models/` copies keep
them (`model.diffusion_model.` before each name there), and the GGUF quantizations of those files.

The tables say what diffusers' converters (`convert_<family>_transformer_checkpoint_to_diffusers`
in loaders/single_file_utils.py) do; tests/formats/test_transformer_files.py and
test_dit_files.py hold them to those converters. Qwen-Image's file is diffusers' own names (its
converter is the identity).

A rule is (original name, diffusers names, how): "" renames; "qkv" splits the original along its
first axis into equal parts; "qkvm" into three parts of the width and the rest (Flux's single
blocks: q, k, v and the MLP in one matrix); "swap" exchanges the two halves (shift, scale ->
scale, shift). A name ending in .weight, .bias or .scale is one tensor; any other name stands for
its .weight and its .bias (whichever the file has).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_LINEAR_2 = ("linear_1", "linear_2")
_IN_OUT = ("in_layer", "out_layer")


def _mlp(orig: str, ours: str) -> list:
    """Flux's two-layer embedders: orig.in_layer/out_layer -> ours.linear_1/linear_2."""
    return [(f"{orig}.{o}", f"{ours}.{d}", "") for o, d in zip(_IN_OUT, _LINEAR_2)]


FLUX_TOP = [
    *_mlp("time_in", "time_text_embed.timestep_embedder"),
    *_mlp("vector_in", "time_text_embed.text_embedder"),
    *_mlp("guidance_in", "time_text_embed.guidance_embedder"),
    ("txt_in", "context_embedder", ""),
    ("img_in", "x_embedder", ""),
    ("final_layer.linear", "proj_out", ""),
    ("final_layer.adaLN_modulation.1", "norm_out.linear", "swap"),
]
_DOUBLE_ATTN = [  # the joint attention of Flux.1's, Chroma's and FLUX.2's double blocks
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), "qkv"),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "qkv"),
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight", ""),
    ("img_attn.norm.key_norm.scale", "attn.norm_k.weight", ""),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight", ""),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight", ""),
    ("img_attn.proj", "attn.to_out.0", ""),
    ("txt_attn.proj", "attn.to_add_out", ""),
]
_FLUX_MLP = [
    ("img_mlp.0", "ff.net.0.proj", ""),
    ("img_mlp.2", "ff.net.2", ""),
    ("txt_mlp.0", "ff_context.net.0.proj", ""),
    ("txt_mlp.2", "ff_context.net.2", ""),
]
FLUX_DOUBLE = [
    ("img_mod.lin", "norm1.linear", ""),
    ("txt_mod.lin", "norm1_context.linear", ""),
    *_DOUBLE_ATTN,
    *_FLUX_MLP,
]
_SINGLE_NORMS = [("norm.query_norm.scale", "attn.norm_q.weight", ""), ("norm.key_norm.scale", "attn.norm_k.weight", "")]
_FLUX_SINGLE_ATTN = [
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "qkvm"),
    *_SINGLE_NORMS,
    ("linear2", "proj_out", ""),
]
FLUX_SINGLE = [("modulation.lin", "norm.linear", ""), *_FLUX_SINGLE_ATTN]

_GUIDANCE = "distilled_guidance_layer"  # Chroma's approximator: the modulations Flux.1 computes per block
CHROMA_TOP = [
    (f"{_GUIDANCE}.in_proj", f"{_GUIDANCE}.in_proj", ""),
    (f"{_GUIDANCE}.out_proj", f"{_GUIDANCE}.out_proj", ""),
    ("txt_in", "context_embedder", ""),
    ("img_in", "x_embedder", ""),
    ("final_layer.linear", "proj_out", ""),
]
CHROMA_GUIDANCE = [("in_layer", "linear_1", ""), ("out_layer", "linear_2", "")]

FLUX2_TOP = [
    ("img_in", "x_embedder", ""),
    ("txt_in", "context_embedder", ""),
    *_mlp("time_in", "time_guidance_embed.timestep_embedder"),
    *_mlp("guidance_in", "time_guidance_embed.guidance_embedder"),
    ("double_stream_modulation_img.lin", "double_stream_modulation_img.linear", ""),
    ("double_stream_modulation_txt.lin", "double_stream_modulation_txt.linear", ""),
    ("single_stream_modulation.lin", "single_stream_modulation.linear", ""),
    ("final_layer.linear", "proj_out", ""),
    ("final_layer.adaLN_modulation.1", "norm_out.linear", "swap"),
]
FLUX2_DOUBLE = [
    *_DOUBLE_ATTN,
    ("img_mlp.0", "ff.linear_in", ""),
    ("img_mlp.2", "ff.linear_out", ""),
    ("txt_mlp.0", "ff_context.linear_in", ""),
    ("txt_mlp.2", "ff_context.linear_out", ""),
]
FLUX2_SINGLE = [("linear1", "attn.to_qkv_mlp_proj", ""), ("linear2", "attn.to_out", ""), *_SINGLE_NORMS]

SD3_TOP = [
    ("pos_embed", "pos_embed.pos_embed", ""),
    ("x_embedder.proj", "pos_embed.proj", ""),
    ("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1", ""),
    ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2", ""),
    ("context_embedder", "context_embedder", ""),
    ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1", ""),
    ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2", ""),
    ("final_layer.linear", "proj_out", ""),
    ("final_layer.adaLN_modulation.1", "norm_out.linear", "swap"),
]
_SD3_ATTN = [
    ("x_block.attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), "qkv"),
    ("context_block.attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "qkv"),
    ("x_block.attn.ln_q.weight", "attn.norm_q.weight", ""),
    ("x_block.attn.ln_k.weight", "attn.norm_k.weight", ""),
    ("context_block.attn.ln_q.weight", "attn.norm_added_q.weight", ""),
    ("context_block.attn.ln_k.weight", "attn.norm_added_k.weight", ""),
    ("x_block.attn.proj", "attn.to_out.0", ""),
    ("x_block.attn2.qkv", ("attn2.to_q", "attn2.to_k", "attn2.to_v"), "qkv"),
    ("x_block.attn2.ln_q.weight", "attn2.norm_q.weight", ""),
    ("x_block.attn2.ln_k.weight", "attn2.norm_k.weight", ""),
    ("x_block.attn2.proj", "attn2.to_out.0", ""),
    ("x_block.adaLN_modulation.1", "norm1.linear", ""),
    ("x_block.mlp.fc1", "ff.net.0.proj", ""),
    ("x_block.mlp.fc2", "ff.net.2", ""),
]
_SD3_CONTEXT = [  # every block but the last, whose context stream ends in a pre-only norm
    ("context_block.attn.proj", "attn.to_add_out", ""),
    ("context_block.adaLN_modulation.1", "norm1_context.linear", ""),
    ("context_block.mlp.fc1", "ff_context.net.0.proj", ""),
    ("context_block.mlp.fc2", "ff_context.net.2", ""),
]
_SD3_LAST = [("context_block.adaLN_modulation.1", "norm1_context.linear", "swap")]

Z_IMAGE_TOP = [
    ("x_embedder", "all_x_embedder.2-1", ""),
    ("final_layer.linear", "all_final_layer.2-1.linear", ""),
    ("final_layer.adaLN_modulation.1", "all_final_layer.2-1.adaLN_modulation.1", ""),
]
Z_IMAGE_BLOCK = [  # the rest of each block's names are diffusers' own
    ("attention.qkv", ("attention.to_q", "attention.to_k", "attention.to_v"), "qkv"),
    ("attention.out", "attention.to_out.0", ""),
    ("attention.q_norm.weight", "attention.norm_q.weight", ""),
    ("attention.k_norm.weight", "attention.norm_k.weight", ""),
]


@dataclass(frozen=True)
class Layout:
    top: list
    # (original prefix, diffusers' prefix, rules, rules of each block but the last, rules of the last)
    blocks: list = field(default_factory=list)
    passthrough: bool = False  # a name no rule takes is the same in both layouts
    dropped: tuple = ()  # original names diffusers' model has no place for (computed, not learned)


LAYOUTS = {
    "flux": Layout(FLUX_TOP, [("double_blocks", "transformer_blocks", FLUX_DOUBLE, [], []),
                              ("single_blocks", "single_transformer_blocks", FLUX_SINGLE, [], [])]),
    "sd3": Layout(SD3_TOP, [("joint_blocks", "transformer_blocks", _SD3_ATTN, _SD3_CONTEXT, _SD3_LAST)]),
    "chroma": Layout(CHROMA_TOP, [("double_blocks", "transformer_blocks", _DOUBLE_ATTN + _FLUX_MLP, [], []),
                                  ("single_blocks", "single_transformer_blocks", _FLUX_SINGLE_ATTN, [], []),
                                  (f"{_GUIDANCE}.layers", f"{_GUIDANCE}.layers", CHROMA_GUIDANCE, [], []),
                                  (f"{_GUIDANCE}.norms", f"{_GUIDANCE}.norms", [("scale", "weight", "")], [], [])]),
    "flux2": Layout(FLUX2_TOP, [("double_blocks", "transformer_blocks", FLUX2_DOUBLE, [], []),
                                ("single_blocks", "single_transformer_blocks", FLUX2_SINGLE, [], [])]),
    "z-image": Layout(Z_IMAGE_TOP, [(b, b, Z_IMAGE_BLOCK, [], []) for b in ("layers", "noise_refiner", "context_refiner")],
                      passthrough=True, dropped=("norm_final.weight",)),
    "qwen-image": Layout([], passthrough=True),
}  # fmt: skip
# A name only the family's transformer has, checked in this order (FLUX.2 and Chroma have Flux.1's block names).
MARKS = {
    "flux2": "double_stream_modulation_img.",
    "chroma": f"{_GUIDANCE}.",
    "flux": "double_blocks.",
    "sd3": "joint_blocks.",
    "qwen-image": "txt_norm.",
    "z-image": "cap_embedder.",
}
# Transformers in these layouts that are other families, told apart by a name only they have.
OTHERS = {"Qwen-Image 2.1": "txt_in.text_norm.", "Chroma Radiance": "nerf_blocks."}
SUPPORTED = "Flux.1, SD 3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image"
