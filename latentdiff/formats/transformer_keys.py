"""The original key layouts of the transformer families' single files (Black Forest Labs' Flux.1
`flux1-dev.safetensors`, Stability's SD 3/3.5 `sd3.5_medium.safetensors`, and ComfyUI's and the
GGUF quantizers' copies of them) <-> diffusers' names, as one table per family read both ways.

The tables say what diffusers' converters (`convert_flux_transformer_checkpoint_to_diffusers`,
`convert_sd3_transformer_checkpoint_to_diffusers`) do; tests/formats/test_transformer_files.py holds
them to those converters. They exist because diffusers' Flux converter fixes the width at Flux's
3072 (a smaller Flux cannot be converted with it) and diffusers has no converter back.

A rule is (original name, diffusers names, how): "" renames; "qkv" splits the original along its
first axis into equal parts; "qkvm" into three parts of the width and the rest (Flux's single
blocks: q, k, v and the MLP in one matrix); "swap" exchanges the two halves (shift, scale ->
scale, shift). A name ending in .weight, .bias or .scale is one tensor; any other name stands for
its .weight and its .bias.
"""

from __future__ import annotations

import torch

from latentdiff.errors import ModelError

_LINEAR_2 = ("linear_1", "linear_2")
FLUX_TOP = [
    *((f"time_in.{o}", f"time_text_embed.timestep_embedder.{d}", "") for o, d in zip(("in_layer", "out_layer"), _LINEAR_2)),
    *((f"vector_in.{o}", f"time_text_embed.text_embedder.{d}", "") for o, d in zip(("in_layer", "out_layer"), _LINEAR_2)),
    *((f"guidance_in.{o}", f"time_text_embed.guidance_embedder.{d}", "") for o, d in zip(("in_layer", "out_layer"), _LINEAR_2)),
    ("txt_in", "context_embedder", ""),
    ("img_in", "x_embedder", ""),
    ("final_layer.linear", "proj_out", ""),
    ("final_layer.adaLN_modulation.1", "norm_out.linear", "swap"),
]  # fmt: skip
FLUX_DOUBLE = [
    ("img_mod.lin", "norm1.linear", ""),
    ("txt_mod.lin", "norm1_context.linear", ""),
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v"), "qkv"),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "qkv"),
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight", ""),
    ("img_attn.norm.key_norm.scale", "attn.norm_k.weight", ""),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight", ""),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight", ""),
    ("img_mlp.0", "ff.net.0.proj", ""),
    ("img_mlp.2", "ff.net.2", ""),
    ("txt_mlp.0", "ff_context.net.0.proj", ""),
    ("txt_mlp.2", "ff_context.net.2", ""),
    ("img_attn.proj", "attn.to_out.0", ""),
    ("txt_attn.proj", "attn.to_add_out", ""),
]
FLUX_SINGLE = [
    ("modulation.lin", "norm.linear", ""),
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "qkvm"),
    ("norm.query_norm.scale", "attn.norm_q.weight", ""),
    ("norm.key_norm.scale", "attn.norm_k.weight", ""),
    ("linear2", "proj_out", ""),
]
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

# family -> (its blocks' original prefix, diffusers' prefix, rules) and the top-level rules
LAYOUTS = {
    "flux": (FLUX_TOP, [("double_blocks", "transformer_blocks", FLUX_DOUBLE), ("single_blocks", "single_transformer_blocks", FLUX_SINGLE)]),
    "sd3": (SD3_TOP, [("joint_blocks", "transformer_blocks", _SD3_ATTN)]),
}  # fmt: skip
MARKS = {"flux": "double_blocks.", "sd3": "joint_blocks."}  # a name only the family's transformer has
# Transformers in a layout like Flux.1's that are other families, told apart by a name only they have.
OTHERS = {"FLUX.2": "double_stream_modulation_img.", "Chroma": "distilled_guidance_layer."}
SUPPORTED = "Flux.1, SD 3/3.5"


def layout_of(names, where="the file") -> str | None:
    """The transformer family whose original layout these tensor names are in (None: neither); one
    of a family we do not load is refused naming it."""
    names = list(names)
    for other, mark in OTHERS.items():
        if any(k.startswith(mark) or f".{mark}" in k for k in names):
            raise ModelError(f"{where} is a {other} transformer; supported transformer files: {SUPPORTED}")
    for family, mark in MARKS.items():
        if any(mark in k for k in names):
            return family
    return None


def block_count(names, prefix: str) -> int:
    """How many blocks `prefix`.0, .1, ... the names hold; numbers with gaps are refused (a damaged
    file's block 99999999 must not make us walk a hundred million blocks)."""
    found = {k.split(".", 2)[1] for k in names if k.startswith(prefix + ".")}
    numbers = {int(i) for i in found if i.isdigit()}
    if numbers and (max(numbers) + 1 != len(numbers) or len(numbers) != len(found)):
        raise ModelError(f"the {prefix} of this file are not numbered 0, 1, 2, ...: a damaged or foreign file")
    return len(numbers)


def _rules(family: str, names) -> list[tuple[str, tuple[str, ...], str]]:
    """Every rule of `family` with block indices filled in, for a model of these (original) names."""
    top, blocks = LAYOUTS[family]
    out = [(o, d if isinstance(d, tuple) else (d,), how) for o, d, how in top]
    for orig, ours, rules in blocks:
        n = block_count(names, orig)
        for i in range(n):
            extra = (_SD3_LAST if i == n - 1 else _SD3_CONTEXT) if family == "sd3" else []
            for o, d, how in rules + extra:
                d = d if isinstance(d, tuple) else (d,)
                out.append((f"{orig}.{i}.{o}", tuple(f"{ours}.{i}.{x}" for x in d), how))
    return out


def _leaves(orig: str, targets: tuple[str, ...]):
    if orig.endswith((".weight", ".bias", ".scale")) or orig == "pos_embed":
        return [(orig, targets)]
    return [(f"{orig}.{p}", tuple(f"{t}.{p}" for t in targets)) for p in ("weight", "bias")]


def _swap(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_diffusers(sd: dict, family: str, where) -> dict:
    """The original-layout transformer tensors `sd` (prefix already removed) in diffusers' names; a
    tensor no rule takes is refused (a layout this does not know)."""
    sd, out = dict(sd), {}
    for orig, targets, how in _rules(family, list(sd)):
        for o, ts in _leaves(orig, targets):
            if o not in sd:
                continue
            t = sd.pop(o)
            if how == "swap":
                out[ts[0]] = _swap(t)
            elif how == "qkv":
                out.update(zip(ts, t.chunk(3, dim=0)))
            elif how == "qkvm":
                if "x_embedder.weight" not in out:  # the width (top-level rules run first)
                    raise ModelError(f"{where} lacks img_in.weight, which every Flux transformer has")
                width = out["x_embedder.weight"].shape[0]
                out.update(zip(ts, torch.split(t, [width] * 3 + [t.shape[0] - 3 * width], dim=0)))
            else:
                out[ts[0]] = t
    if sd:
        raise ModelError(f"{where} has tensors the {family} layout does not know: {', '.join(sorted(sd)[:3])}...")
    return out


def to_original(sd: dict, family: str) -> dict:
    """diffusers' transformer tensors `sd` in the original layout (the inverse of `to_diffusers`)."""
    sd, out = dict(sd), {}
    names = _original_names(sd, family)
    for orig, targets, how in _rules(family, names):
        for o, ts in _leaves(orig, targets):
            if not all(t in sd for t in ts):
                continue
            parts = [sd.pop(t) for t in ts]
            out[o] = _swap(parts[0]) if how == "swap" else torch.cat(parts, dim=0)
    if sd:
        raise ModelError(f"cannot write {', '.join(sorted(sd)[:3])} in the original {family} layout")
    return out


def _original_names(sd: dict, family: str) -> list[str]:
    """Stand-in original names with the block counts of diffusers' `sd` (for `_rules`)."""
    _, blocks = LAYOUTS[family]
    return [f"{orig}.{i}." for orig, ours, _ in blocks for i in range(block_count(list(sd), ours))]
