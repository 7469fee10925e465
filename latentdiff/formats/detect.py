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
    ("Flux", ("double_blocks.", "single_blocks.", "double_stream_modulation")),
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
    raise ModelError(f"{where} is {describe(names)}, not a model this can generate with; supported: {SUPPORTED}")


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
