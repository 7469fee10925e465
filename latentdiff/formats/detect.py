"""What a model file or folder holds, told from tensor names and shapes (no weights read), so
an unsupported architecture gets one line naming it instead of a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.models.configs import SUPPORTED
from latentdiff.models.weights import safetensors_header

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
# (what it is, a name prefix or fragment that only it has); checked in order
_FOREIGN = [
    (
        "a LoRA (use --lora with it, on a base --model)",
        ("lora_unet_", "lora_te", ".lora_down.", ".lora_A.", ".lora_up.", "lora.down", ".hada_w1"),
    ),
    ("a ControlNet", ("control_model.", "controlnet_cond_embedding.", "input_hint_block.")),
    ("Stable Diffusion 3", ("joint_blocks.", "context_embedder.")),
    # The transformer families' files (--model FILE --components DIR); FLUX.2's and Chroma's before
    # Flux.1's, whose block names they share; Qwen-Image's after them, whose original blocks have img_mod too.
    ("a FLUX.2 transformer", ("double_stream_modulation", "single_stream_modulation")),
    ("a Chroma transformer", ("distilled_guidance_layer.",)),
    ("Flux", ("double_blocks.", "single_blocks.")),
    ("a Qwen-Image transformer", ("txt_norm.", "img_mod.")),
    ("a Z-Image transformer", ("cap_embedder.", "context_refiner.")),
]


@dataclass
class Detected:
    family: str  # sd1, sd2, sdxl, sdxl_refiner
    in_channels: int  # 4, or 9 for inpainting

    @property
    def name(self) -> str:
        names = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}
        return names[self.family] + (" inpainting" if self.in_channels == 9 else "")


def read_header(path: Path) -> tuple[dict, dict]:
    """(name -> shape, metadata) of a safetensors file, from its header alone (bounded and
    checked: models/weights.safetensors_header)."""
    header = safetensors_header(path)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelError(f"{path} is not a readable safetensors file: its metadata is not a table of strings")
    return {k: v.get("shape") for k, v in header.items()}, meta


def detect(shapes: dict, where) -> Detected:
    """The Stable Diffusion family of an original-layout (A1111) checkpoint, else one clear error."""
    names = list(shapes)
    if UNET_IN in shapes:
        if any(k.startswith("conditioner.embedders.1.") for k in names):
            family = "sdxl"
        elif any(k.startswith("conditioner.embedders.0.model.") for k in names):
            family = "sdxl_refiner"
        elif any(k.startswith("cond_stage_model.model.") for k in names):
            family = "sd2"
        elif any(k.startswith("cond_stage_model.transformer.") for k in names):
            family = "sd1"
        else:
            raise ModelError(
                f"{where} holds a Stable Diffusion UNet but no text encoder; supported: full checkpoints of {SUPPORTED}"
            )
        if len(shapes[UNET_IN]) != 4:
            raise ModelError(f"{where}: {UNET_IN} has the shape {shapes[UNET_IN]}, not a convolution's 4 dimensions")
        in_channels = shapes[UNET_IN][1]
        if in_channels not in (4, 9):
            raise ModelError(f"{where} is a UNet with {in_channels} input channels; supported: {SUPPORTED}")
        return Detected(family, in_channels)
    if any("joint_blocks." in k for k in names):
        raise ModelError(sd3_refusal(names, where))
    raise ModelError(f"{where} is {describe(names)}, not a model this can generate with; supported: {SUPPORTED}")


# The parts an SD3 single file (Stability's and ComfyUI's layout) may hold beside the MMDiT's joint blocks.
SD3_PARTS = {
    "CLIP-L": "text_encoders.clip_l.",
    "CLIP-G": "text_encoders.clip_g.",
    "T5": "text_encoders.t5xxl.",
    "VAE": "first_stage_model.",
}


def sd3_name(names: list[str]) -> str:
    """Which SD3 a file's transformer is, from its blocks: SD 3.5 medium's dual attention (attn2),
    SD 3.5's query-key norm (ln_q) over 38 blocks (large) or none over 24 (SD 3 medium)."""
    blocks = len({k.split("joint_blocks.")[1].split(".")[0] for k in names if "joint_blocks." in k})
    if any("x_block.attn2." in k for k in names):
        return "SD 3.5 medium"
    qk_norm = any(".ln_q." in k for k in names)
    return {(True, 38): "SD 3.5 large", (False, 24): "SD 3 medium"}.get((qk_norm, blocks), "SD 3/3.5")


def sd3_refusal(names: list[str], where) -> str:
    """One line for an SD3 single file: what it holds, what it lacks, and the folder to use instead."""
    has = [part for part, prefix in SD3_PARTS.items() if any(k.startswith(prefix) for k in names)]
    lacks = [part for part in ("CLIP-L", "CLIP-G", "VAE") if part not in has]
    held = f"an {sd3_name(names)} transformer" + (f" with {', '.join(has)}" if has else " alone")
    missing = f" (it lacks {', '.join(lacks)}; T5 is optional)" if lacks else ""
    return (
        f"{where} is {held}{missing}: an SD3 file loads as --model FILE --components DIR, DIR a diffusers folder "
        "of SD 3/3.5 (transformer/, text_encoder/, text_encoder_2/, vae/, their tokenizers and optionally "
        f"text_encoder_3/, as stabilityai/stable-diffusion-3.5-medium ships it); supported: {SUPPORTED}"
    )


def describe(names: list[str]) -> str:
    """A short guess at what a set of tensor names is."""
    if any(k.split(".")[0] in ("string_to_param", "emb_params", "clip_l", "clip_g") for k in names):
        return "a textual-inversion embedding (use --embedding)"
    for what, marks in _FOREIGN:
        if any(m in k for k in names for m in marks):
            return what
    if any(k.startswith(("encoder.down.", "first_stage_model.", "encoder.down_blocks.")) for k in names) and not any(
        "diffusion_model" in k or k.startswith("down_blocks.") for k in names
    ):
        return "a VAE alone (use --vae with it)"
    if any(k.startswith(("down_blocks.", "conv_in.")) for k in names):
        return "a diffusers component alone (a UNet?), not a whole model"
    return f"an unknown set of {len(names)} tensors" if names else "an empty checkpoint"
