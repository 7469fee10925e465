"""IP-Adapter files as users have them (h94/IP-Adapter, the A1111 extension, ComfyUI): a
`.safetensors` with `image_proj.*` / `ip_adapter.*` tensors, or a `.bin` (a pickle of the two
dicts, read only with allow_pickle, weights_only). The variant is told from the image projection's
tensors, as diffusers' `_convert_ip_adapter_image_proj_to_diffusers` tells it:

- `base`: `proj.weight` (ImageProjection: CLIP image embeddings -> 4 tokens);
- `plus`: a Resampler (`latents`, `proj_in`...; Plus and Plus-Face: CLIP hidden states[-2]);
- `full`: `proj.3.weight` (Full-Face: CLIP hidden states[-2] -> 257 tokens);
- `faceid`: `norm.weight` + `proj.0/2` (FaceID: a face-recognition embedding -> 4 tokens);
- `faceid-plus` (`perceiver_resampler.*`): needs face and CLIP embeddings together; refused.

`ip_adapter.{k}.to_k_ip.weight` (k = 1, 3, 5, ...) hold one cross-attention layer each, in the
UNet's attention-processor order; their input width is the text-embedding width of the model
family the adapter was trained for (768 SD 1.x, 1024 SD 2.x, 2048 SDXL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.models.weights import load_state_dict

KNOWN_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL", 1280: "the SDXL refiner"}
NEEDS_HIDDEN_STATES = ("plus", "full")  # the CLIP encoder's hidden_states[-2], not its image_embeds


@dataclass(frozen=True)
class AdapterFile:
    """A read IP-Adapter: its tensors split as diffusers' load_ip_adapter splits them."""

    path: Path
    state: dict  # {"image_proj": {...}, "ip_adapter": {...}}, the file's own key names
    kind: str  # base, plus, full or faceid
    width: int  # the text-embedding width its cross-attention layers take
    layers: int  # cross-attention layers it adds to
    embed_dim: int  # the width of what its image projection takes (CLIP embeds/hidden size, face embedding)
    lora: bool  # FaceID files carry LoRA weights for the UNet's attention

    @property
    def family(self) -> str:
        return family_label(self.width)


def family_label(width: int) -> str:
    """A text-embedding width as the model family that has it."""
    known = KNOWN_WIDTHS.get(width)
    return f"{known} (text-embedding width {width})" if known else f"text-embedding width {width}"


def read_adapter(path: Path, allow_pickle: bool, name: str) -> AdapterFile:
    """The IP-Adapter in `path`; one UsageError naming `name` if it is none."""
    if not path.is_file():
        raise UsageError(f"{name} {path} is not a file")
    try:
        flat = load_state_dict(path, allow_pickle)
    except ModelError as e:
        raise ModelError(f"{name}: {e}") from None
    state = split(flat)
    proj, attn = state["image_proj"], state["ip_adapter"]
    if not proj or not attn:
        raise UsageError(f"{name} {path} is not an IP-Adapter (it has no image_proj and ip_adapter weights)")
    kind = variant(proj)
    if kind is None:
        raise UsageError(f"{name} {path} holds an image projection of no known IP-Adapter variant")
    if kind == "faceid-plus":
        raise UsageError(
            f"{name} {path} is a FaceID-Plus adapter, which needs CLIP and face embeddings together; "
            "use a FaceID, base or Plus adapter"
        )
    keys = [k for k in attn if k.endswith(".to_k_ip.weight")]
    if not keys or any(f"{k.split('.')[0]}.to_v_ip.weight" not in attn for k in keys):
        raise UsageError(f"{name} {path} is not an IP-Adapter (its ip_adapter weights lack to_k_ip/to_v_ip)")
    width = int(attn[keys[0]].shape[-1])
    lora = any("_lora." in k for k in attn)
    return AdapterFile(path, state, kind, width, len(keys), _embed_dim(proj, kind), lora)


def split(flat: dict) -> dict:
    """A file's tensors as diffusers' load_ip_adapter holds them: nested dicts (a pickle) are kept,
    safetensors' `image_proj.` / `ip_adapter.` prefixes become the two dicts."""
    out = {"image_proj": {}, "ip_adapter": {}}
    for part in out:
        if isinstance(flat.get(part), dict):
            out[part] = dict(flat[part])
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in out and rest and not isinstance(value, dict):
            out[head][rest] = value
    return out


def variant(proj: dict) -> str | None:
    if "proj.weight" in proj:
        return "base"
    if "proj.3.weight" in proj:
        return "full"
    if "perceiver_resampler.proj_in.weight" in proj:
        return "faceid-plus"
    if "norm.weight" in proj and "proj.0.weight" in proj and "proj.2.weight" in proj:
        return "faceid"
    if {"latents", "proj_in.weight", "proj_out.weight"} <= set(proj):
        return "plus"
    return None


def _embed_dim(proj: dict, kind: str) -> int:
    weight = {"base": "proj.weight", "plus": "proj_in.weight", "full": "proj.0.weight", "faceid": "proj.0.weight"}
    return int(proj[weight[kind]].shape[-1])
