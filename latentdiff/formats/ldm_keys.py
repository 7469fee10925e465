"""diffusers -> original (LDM / AUTOMATIC1111) key layout, for writing single-file checkpoints.

diffusers ships only the other direction (`loaders.single_file_utils.convert_ldm_*`), which is
what reads these files back; the tests hold this mapping to it (a round trip is bit-exact).
The UNet's block numbering follows its config (layers per block, which blocks attend), so any
size of SD 1.x/2.x/XL UNet maps, not only the released ones.
"""

from __future__ import annotations

import torch

from latentdiff.errors import ModelError

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
# Where each text encoder lives in a single file, by family and position.
CLIP_PREFIXES = {
    "sd1": ["cond_stage_model.transformer."],
    "sd2": ["cond_stage_model.model."],
    "sdxl": ["conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."],
    "sdxl_refiner": ["conditioner.embedders.0.model."],
}
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _mapping():
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    return DIFFUSERS_TO_LDM_MAPPING


def _unet_prefixes(config: dict) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs for every block of a UNet with this config."""
    per = config["layers_per_block"]
    n = len(config["down_block_types"])
    pairs = [
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(n):
        for j in range(per):
            k = 1 + i * (per + 1) + j
            pairs += [
                (f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{k}.0."),
                (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{k}.1."),
            ]
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{1 + i * (per + 1) + per}.0.op."))
        attends = "CrossAttn" in config["up_block_types"][i]
        for j in range(per + 1):
            k = i * (per + 1) + j
            pairs += [
                (f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{k}.0."),
                (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{k}.1."),
            ]
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (per + 1) + per}.{2 if attends else 1}."))
    return pairs


def layout_problem(config: dict) -> str | None:
    """Why a UNet of this config has no place in the original layout, or None where it has one
    (judged from the config alone, before any weights are read)."""
    extra = config.get("addition_embed_type")
    if extra not in (None, "text_time"):
        return f"its UNet adds diffusers' addition_embed_type {extra!r} to the timestep embedding"
    for key in ("class_embed_type", "encoder_hid_dim_type", "time_cond_proj_dim"):
        if config.get(key) is not None:
            return f"its UNet uses diffusers' {key} {config[key]!r}"
    return None


def unet_to_ldm(sd: dict, config: dict) -> dict:
    """The UNet's tensors under their original names; a tensor without one is a ModelError."""
    m = _mapping()["unet"]
    top = {**m["layers"], **(m["addition_embed_type"] if config.get("addition_embed_type") == "text_time" else {})}
    pairs = _unet_prefixes(config)
    out = {}
    for key, value in sd.items():
        if key in top:
            out[UNET_PREFIX + top[key]] = value
            continue
        hf, ldm = next(((h, g) for h, g in pairs if key.startswith(h)), (None, None))
        if hf is None:
            why = layout_problem(config) or f"its UNet holds {key}"
            raise ModelError(f"{why}, which the single-file layout A1111 and ComfyUI load has no place for")
        rest = key[len(hf) :]
        if ".resnets." in hf:
            head, _, tail = rest.partition(".")
            rest = f"{_RESNET.get(head, head)}.{tail}"
        out[UNET_PREFIX + ldm + rest] = value
    return out


def vae_to_ldm(sd: dict, config: dict) -> dict:
    top = _mapping()["vae"]
    n = len(config["up_block_types"])
    out = {}
    for key, value in sd.items():
        if key in top:
            out[VAE_PREFIX + top[key]] = value
            continue
        k = (
            key.replace("down_blocks.", "down.")
            .replace(".resnets.", ".block.")
            .replace("downsamplers.0", "downsample")
            .replace("upsamplers.0", "upsample")
            .replace("conv_shortcut", "nin_shortcut")
        )
        if ".mid_block." in key:
            k = key.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
            k = k.replace("conv_shortcut", "nin_shortcut")
            if ".attentions.0." in key:
                k = _vae_attention(key)
                value = value[:, :, None, None] if value.dim() == 2 else value  # LDM keeps 1x1 convolutions
        if key.startswith("decoder.up_blocks."):
            i = int(key.split(".")[2])
            k = k.replace(f"decoder.up_blocks.{i}.", f"decoder.up.{n - 1 - i}.")
        out[VAE_PREFIX + k] = value
    return out


def _vae_attention(key: str) -> str:
    part, _, name = key.partition(".mid_block.attentions.0.")
    name = (
        {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}[name.rsplit(".", 1)[0]]
        + "."
        + name.rsplit(".", 1)[1]
    )
    return f"{part}.mid.attn_1.{name}"


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    """OpenAI CLIP (SD 1.x, SDXL's first encoder): the transformers keys under a prefix."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def open_clip_to_ldm(sd: dict, prefix: str) -> dict:
    """OpenCLIP (SD 2.x, SDXL's second encoder): fused q/k/v, transposed projection."""
    m = _mapping()["openclip"]
    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in sd.items()}
    out = {}
    for key, value in sd.items():
        if key in m["layers"]:
            out[prefix + m["layers"][key]] = value.T.contiguous() if key == "text_projection.weight" else value
        elif ".self_attn.q_proj." in key:
            kind = key.rsplit(".", 1)[1]
            qkv = [sd[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[prefix + _open_clip_layer(key).replace("attn.q_proj." + kind, "attn.in_proj_" + kind)] = torch.cat(qkv)
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            out[prefix + _open_clip_layer(key)] = value
    return out


def _open_clip_layer(key: str) -> str:
    for new, old in list(_mapping()["openclip"]["transformer"].items())[:6]:
        key = key.replace(new, old)
    return "transformer." + key
