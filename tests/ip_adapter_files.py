"""Tiny random IP-Adapter files as users have them (h94/IP-Adapter's key names, .safetensors and
.bin), sized from a tiny UNet as diffusers' tests' create_ip_adapter_*_state_dict size them, and a
tiny CLIP vision encoder saved as an `image_encoder/` folder in the h94 layout."""

from pathlib import Path

import torch
from safetensors.torch import save_file

FACE_DIM = 512


def _rand(g, *shape, scale=0.3, around=0.0):
    return around + torch.randn(shape, generator=g) * scale


def _norm(g, out: dict, prefix: str, dim: int):
    out[f"{prefix}.weight"] = _rand(g, dim, scale=0.1, around=1.0)
    out[f"{prefix}.bias"] = _rand(g, dim, scale=0.1)


def attention_state(unet, g) -> dict:
    """`{k}.to_k_ip.weight` / `{k}.to_v_ip.weight` for each cross-attention layer (k = 1, 3, ...)."""
    cfg, out, key = unet.config, {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = int(name.split(".")[1]) if not name.startswith("mid_block") else -1
        channels = list(cfg.block_out_channels)
        hidden = channels[-1] if block < 0 else (channels[::-1] if name.startswith("up") else channels)[block]
        out[f"{key}.to_k_ip.weight"] = _rand(g, hidden, cfg.cross_attention_dim)
        out[f"{key}.to_v_ip.weight"] = _rand(g, hidden, cfg.cross_attention_dim)
        key += 2
    return out


def base_proj(cross: int, clip_dim: int, g) -> dict:
    out = {"proj.weight": _rand(g, 4 * cross, clip_dim), "proj.bias": _rand(g, 4 * cross, scale=0.1)}
    _norm(g, out, "norm", cross)
    return out


def plus_proj(cross: int, clip_hidden: int, g, dim: int = 64, queries: int = 4) -> dict:
    """A Resampler (IP-Adapter Plus / Plus-Face) of 4 layers, one 64-wide head."""
    out = {"latents": _rand(g, 1, queries, dim, scale=1.0)}
    out["proj_in.weight"], out["proj_in.bias"] = _rand(g, dim, clip_hidden), _rand(g, dim, scale=0.1)
    out["proj_out.weight"], out["proj_out.bias"] = _rand(g, cross, dim), _rand(g, cross, scale=0.1)
    _norm(g, out, "norm_out", cross)
    for i in range(4):
        p = f"layers.{i}"
        _norm(g, out, f"{p}.0.norm1", dim)
        _norm(g, out, f"{p}.0.norm2", dim)
        out[f"{p}.0.to_q.weight"] = _rand(g, dim, dim, scale=0.1)
        out[f"{p}.0.to_kv.weight"] = _rand(g, 2 * dim, dim, scale=0.1)
        out[f"{p}.0.to_out.weight"] = _rand(g, dim, dim, scale=0.1)
        _norm(g, out, f"{p}.1.0", dim)
        out[f"{p}.1.1.weight"] = _rand(g, 4 * dim, dim, scale=0.1)
        out[f"{p}.1.3.weight"] = _rand(g, dim, 4 * dim, scale=0.1)
    return out


def faceid_proj(cross: int, g, mult: int = 2, tokens: int = 4) -> dict:
    out = {"proj.0.weight": _rand(g, FACE_DIM * mult, FACE_DIM, scale=0.05), "proj.0.bias": _rand(g, FACE_DIM * mult)}
    out["proj.2.weight"] = _rand(g, cross * tokens, FACE_DIM * mult, scale=0.05)
    out["proj.2.bias"] = _rand(g, cross * tokens, scale=0.1)
    _norm(g, out, "norm", cross)
    return out


def faceid_lora(unet, g, rank: int = 4) -> dict:
    """The LoRA FaceID files carry: `{k}.to_{q,k,v,out}_lora.{down,up}.weight` for every attention
    layer k (0, 1, 2, ... in the UNet's processor order)."""
    out = {}
    for k, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        for part, layer in (("q", attn.to_q), ("k", attn.to_k), ("v", attn.to_v), ("out", attn.to_out[0])):
            out[f"{k}.to_{part}_lora.down.weight"] = _rand(g, rank, layer.in_features, scale=0.2)
            out[f"{k}.to_{part}_lora.up.weight"] = _rand(g, layer.out_features, rank, scale=0.2)
    return out


def adapter_state(unet, kind: str, clip_dim: int, clip_hidden: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    proj = {
        "base": lambda: base_proj(cross, clip_dim, g),
        "plus": lambda: plus_proj(cross, clip_hidden, g),
        "faceid": lambda: faceid_proj(cross, g),
    }[kind]()
    attn = attention_state(unet, g)
    return {"image_proj": proj, "ip_adapter": {**attn, **(faceid_lora(unet, g) if kind == "faceid" else {})}}


def write_adapter(state: dict, path: Path) -> Path:
    """`.safetensors`: flat `image_proj.*` / `ip_adapter.*` keys; else a torch pickle of the two dicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        flat = {f"{part}.{k}": v.contiguous() for part, d in state.items() for k, v in d.items()}
        save_file(flat, str(path))
    else:
        torch.save(state, path)
    return path


def image_encoder(folder: Path, hidden: int, projection: int, seed: int = 0) -> Path:
    """A tiny CLIPVisionModelWithProjection (32x32 pictures) saved as an image_encoder folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=hidden,
        projection_dim=projection,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
    )
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    return folder


# (hidden size, projection dim) of the tiny encoders: SD 1.x's (ViT-H's place), SDXL's (bigG's place)
SD_ENCODER, SDXL_ENCODER = (32, 24), (40, 28)


def h94_layout(root: Path, unet, sdxl: bool = False) -> Path:
    """`models/` (or `sdxl_models/`) with image_encoder/ and ip-adapter files of every variant;
    returns that folder."""
    folder = root / ("sdxl_models" if sdxl else "models")
    hidden, proj = SDXL_ENCODER if sdxl else SD_ENCODER
    image_encoder(folder / "image_encoder", hidden, proj, seed=3 if sdxl else 2)
    tag = "sdxl" if sdxl else "sd15"
    for kind, seed in (("base", 11), ("plus", 12), ("faceid", 13)):
        state = adapter_state(unet, kind, proj, hidden, seed)
        name = {"base": f"ip-adapter_{tag}", "plus": f"ip-adapter-plus_{tag}", "faceid": f"ip-adapter-faceid_{tag}"}
        write_adapter(state, folder / f"{name[kind]}.safetensors")
        write_adapter(state, folder / f"{name[kind]}.bin")
    return folder
