"""Write a Flux.1 transformer's LoRA as kohya's sd-scripts (`networks.lora_flux`) does, the layout ComfyUI,
Forge and A1111-style tools load: one `lora_unet_<Black Forest Labs module path with _>` per layer of the
original checkpoint (`double_blocks_0_img_attn_qkv`, `single_blocks_0_linear1`, ...) with `.lora_down.weight`,
`.lora_up.weight` and `.alpha`, and kohya's `ss_*` metadata.

diffusers' layers map to the original ones by formats/transformer_keys.py's Flux table. Where the original
fuses several diffusers layers (q, k, v; a single block's q, k, v and MLP input), the fused LoRA stacks the
parts' down matrices and puts their up matrices on the block diagonal (a part without a LoRA, such as the
MLP input the trainers leave out, gets zero rows of the same rank), so up @ down is exactly the parts'
products stacked: what ComfyUI adds to the fused weight, and what diffusers' kohya converter splits back
(it recognises the block-diagonal up matrix)."""

from __future__ import annotations

from pathlib import Path

import torch

from latentdiff.errors import ModelError
from latentdiff.formats.lora_kohya import ADAPTER, _one
from latentdiff.formats.transformer_keys import _original_names, _rules, _swap
from latentdiff.runtime.files import as_umask_allows

KOHYA_FLUX_MODULE = "networks.lora_flux"


def _adapted(transformer) -> dict:
    """{diffusers layer name: (A, B, scaling)} of the transformer's peft LoRA layers (fp32, on the CPU)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    out = {}
    for key, a in state.items():
        if ".lora_A." in key:
            name = key.rsplit(".lora_A.", 1)[0]
            b = state[f"{name}.lora_B.weight"]
            scaling = transformer.get_submodule(name).scaling[ADAPTER]
            out[name] = (a.detach().float().cpu(), b.detach().float().cpu(), float(scaling))
    return out


def _fused(parts: list, widths: list[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(down, up, scale) of layers stacked along their outputs: `parts[i]` (A, B, scaling) or None (zeros)."""
    given = [p for p in parts if p is not None]
    rank, inputs, scale = given[0][0].shape[0], given[0][0].shape[1], given[0][2]
    if any(p[0].shape[0] != rank for p in given):
        raise ModelError("the LoRA's fused layers have different ranks; kohya's layout holds one rank a layer")
    down = torch.zeros(rank * len(parts), inputs)
    up = torch.zeros(sum(widths), rank * len(parts))
    row = 0
    for i, (part, width) in enumerate(zip(parts, widths)):
        if part is not None:
            down[i * rank : (i + 1) * rank] = part[0]
            up[row : row + width, i * rank : (i + 1) * rank] = part[1] * (part[2] / scale)
        row += width
    return down, up, scale


def flux_kohya_tensors(transformer) -> tuple[dict, set, set]:
    """The kohya tensors of `transformer`'s LoRA, and the ranks and alphas written (for the metadata)."""
    lora = _adapted(transformer)
    names = _original_names(dict.fromkeys(n for n, _ in transformer.named_parameters()), "flux")
    tensors, ranks, alphas = {}, set(), set()
    for orig, targets, how in _rules("flux", names):
        parts = [lora.pop(t, None) for t in targets]
        if all(p is None for p in parts):
            continue
        down, up, scale = _fused(parts, [transformer.get_submodule(t).out_features for t in targets])
        key = "lora_unet_" + orig.replace(".", "_")
        rank = down.shape[0]
        tensors[f"{key}.lora_down.weight"] = down.contiguous()
        tensors[f"{key}.lora_up.weight"] = (_swap(up) if how == "swap" else up).contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(rank * scale, dtype=torch.float32)
        ranks.add(rank)
        alphas.add(rank * scale)
    if lora:
        raise ModelError(f"cannot write the LoRA of {', '.join(sorted(lora)[:3])} in kohya's Flux layout")
    return tensors, ranks, alphas


def save_flux_kohya(path: Path, transformer, metadata: dict | None = None) -> Path:
    """`transformer`'s peft LoRA to `path` in kohya's Flux layout, with `metadata` beside the network's own."""
    from safetensors.torch import save_file

    tensors, ranks, alphas = flux_kohya_tensors(transformer)
    meta = {
        "ss_network_module": KOHYA_FLUX_MODULE,
        "ss_network_dim": _one(ranks),
        "ss_network_alpha": _one(alphas),
        "ss_base_model_version": "flux1",
        **{k: str(v) for k, v in (metadata or {}).items() if v is not None},
    }
    save_file(tensors, str(path), metadata=meta)
    as_umask_allows(path)
    return Path(path)
