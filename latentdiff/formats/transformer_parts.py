"""The other parts of a transformer family's model given as files, over those of the --components
folder: a whole checkpoint's own VAE and text encoders (Stability's `sd3.5_large.safetensors`,
ComfyUI's saved Flux checkpoints: `text_encoders.clip_l.transformer.*`, `first_stage_model.*`), and
text encoder files as ComfyUI users keep them (`--text-encoder clip_l.safetensors`, `t5xxl_fp16.safetensors`,
in transformers' layout), each matched by its tensors' names and shapes to the encoder it replaces.
The folder still gives the configs and the tokenizers (no file carries them)."""

from __future__ import annotations

from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.models.weights import load_state_dict

# A whole checkpoint's encoders (ComfyUI's and Stability's prefix) -> the Components slot they fill.
ENCODERS = {
    "flux": {"clip_l": "text_encoder", "t5xxl": "text_encoder_2"},
    "sd3": {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "text_encoder_3"},
    "chroma": {"t5xxl": "text_encoder"},
}
VAE_PREFIXES = ("first_stage_model.", "vae.")
IGNORED = ("position_ids", "logit_scale")  # stored by some exporters, computed by transformers
FP8_SCALES = ("scale_weight", "scale_input")  # ComfyUI's scaled fp8: per-layer scalars beside each weight


def upcast_fp8(sd: dict) -> dict:
    """fp8 tensors as bf16 (exact), each scaled one multiplied by its scale_weight first; the scale
    tensors and ComfyUI's `scaled_fp8` marker dropped."""
    import torch

    fp8 = {torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}
    out = {}
    for name, t in sd.items():
        if name == "scaled_fp8" or name.rsplit(".", 1)[-1] in FP8_SCALES:
            continue
        if t.dtype in fp8:
            scale = sd.get(name.removesuffix("weight") + "scale_weight")
            t = t.float() * scale.float() if scale is not None else t
            t = t.to(torch.bfloat16)
        out[name] = t
    return out


def load_into(module, part: dict, where) -> None:
    """`part`'s tensors into the loaded `module` (those it lacks keep the folder's), all or nothing:
    a tensor `module` has no place for, or of another shape, is one line."""
    own = module.state_dict()
    part = {k: v for k, v in part.items() if not k.endswith(IGNORED)}
    if not hasattr(module, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    foreign = [k for k in part if k not in own]
    if foreign:
        raise ModelError(
            f"{where} has tensors {type(module).__name__} has no place for, such as {', '.join(foreign[:3])}"
        )
    wrong = [k for k, v in part.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ModelError(
            f"{where}: {k} is {tuple(part[k].shape)}, the model's {tuple(own[k].shape)}; not this model's part"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in part.items()}, strict=False)


def apply_checkpoint_parts(comps, sd: dict, family: str, where) -> list[str]:
    """A whole checkpoint's VAE and text encoders put in `comps`; the names of the parts taken."""
    taken = []
    for name, slot in ENCODERS.get(family, {}).items():
        prefix = f"text_encoders.{name}.transformer."
        part = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if part and getattr(comps, slot) is not None:
            load_into(getattr(comps, slot), part, f"{where} ({name})")
            taken.append(name)
    vae = {k: v for k, v in sd.items() if k.startswith(VAE_PREFIXES)}
    if vae and type(comps.vae).__name__ != "AutoencoderKL":  # FLUX.2's and Qwen-Image's VAEs have layouts of their own
        raise ModelError(f"{where} holds a VAE in a layout read only for Flux.1's and SD's; use the transformer alone")
    if vae:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        vae = {"first_stage_model." + k.split(".", 1)[1]: v for k, v in vae.items()}
        try:
            load_into(comps.vae, convert_ldm_vae_checkpoint(vae, dict(comps.vae.config)), f"{where} (VAE)")
        except KeyError as e:
            raise ModelError(f"{where}: its VAE lacks {e}") from None
        taken.append("vae")
    return taken


def apply_text_encoder_files(comps, files, allow_pickle: bool = False) -> None:
    """Each of `files` (transformers' layout, or a whole checkpoint's one encoder) into the encoder
    of `comps` whose tensors it fits."""
    for f in files:
        path = Path(f).expanduser()
        if not path.is_file():
            raise UsageError(f"--text-encoder {f}: no such file")
        sd = upcast_fp8(load_state_dict(path, allow_pickle))  # t5xxl_fp8_e4m3fn(_scaled).safetensors
        sd = {_unprefixed(k): v for k, v in sd.items()}
        # ComfyUI's Qwen3 (qwen_3_4b.safetensors) is a causal LM's: model.* and the tied lm_head.
        bare = {k.removeprefix("model."): v for k, v in sd.items() if k != "lm_head.weight"}
        fits = [(m, part) for m in comps.text_encoders() for part in (sd, bare) if _fits(m, part)]
        if not fits:
            names = ", ".join(type(m).__name__ for m in comps.text_encoders())
            raise UsageError(f"--text-encoder {f} fits none of the model's text encoders ({names}) by its tensors")
        load_into(*fits[0], path)


def _unprefixed(name: str) -> str:
    if name.startswith("text_encoders."):
        return name.split(".transformer.", 1)[-1]
    return name


def _fits(module, sd: dict) -> bool:
    own = {k.removeprefix("text_model."): tuple(v.shape) for k, v in module.state_dict().items()}
    mine = {k.removeprefix("text_model."): tuple(v.shape) for k, v in sd.items() if not k.endswith(IGNORED)}
    return bool(mine) and all(own.get(k) == s for k, s in mine.items())
