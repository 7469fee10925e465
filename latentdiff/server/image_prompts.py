"""IP-Adapter image prompts on the server, for both APIs.

A prompt names its adapter by name, never by path: an adapter file of the server's --ip-adapter-dir
(default: an `ipadapter/` folder beside the models), in it or in one folder below it (the h94/
IP-Adapter repository's `models/` and `sdxl_models/`), matched as control models are
(controls.ControlModels: `ip-adapter_sd15 [hash]`, the name, or the hash). The image encoder is
the h94 layout's beside the adapter (workflows/image_encoder.layout_folders), only where it lies
inside that folder: a request never reaches a path outside it.

The picture is held as the file sent (inputs.PromptFile); for a FaceID adapter, `image` is instead
the base64 of a numpy `.npy` file of face embeddings ((512,) or (N, 512) float), read with
allow_pickle=False. In the A1111 ControlNet extension's API an IP-Adapter is a unit whose module is
one of IP_MODULES (or whose model is an adapter of that folder); `weight` is its scale."""

from __future__ import annotations

from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.server.controls import MAX_LISTED, TITLE, ControlModels
from latentdiff.server.inputs import PromptFile, picture_bytes
from latentdiff.server.models import inside

ADAPTER_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
MAX_SCALE = 2.0  # workflows/image_prompt.MAX_SCALE (not imported: it imports torch)
MAX_PROMPTS = 8  # workflows/image_prompt.MAX_PROMPTS
# The extension's IP-Adapter preprocessors that take a picture (each names a CLIP vision encoder;
# here the encoder is the one beside the adapter whose widths fit it).
IP_MODULES = (
    "ip-adapter_clip_sd15",
    "ip-adapter_clip_h",
    "ip-adapter_clip_sdxl",
    "ip-adapter_clip_g",
    "ip-adapter_clip_sdxl_plus_vith",
    "ip-adapter_clip_bigg",
    "ip-adapter-auto",
    "ip-adapter_auto",
)
FACE_MODULES = ("ip-adapter_face_id", "ip-adapter_face_id_plus", "ip-adapter_pulid", "instant_id_face_embedding")


class AdapterModels(ControlModels):
    """The IP-Adapter files of --ip-adapter-dir (`root`, resolved; None: the server has none)."""

    kind, flag = "IP-Adapter", "--ip-adapter-dir"

    def listed(self) -> list[Path]:
        """Files of the folder and of the folders in it (not an image encoder's own)."""
        out = []
        for entry in sorted(self.root.iterdir())[:MAX_LISTED]:
            if entry.is_dir() and not (entry / "config.json").is_file():
                out += sorted(e for e in entry.iterdir() if e.is_file())[:MAX_LISTED]
            elif entry.is_file():
                out.append(entry)
        return out[:MAX_LISTED]

    def short_hash(self, path: Path) -> str | None:
        # Imported with the first listing: fingerprint reads weights' names through models.weights (numpy, safetensors).
        from latentdiff.models.fingerprint import a1111_short_hash

        if not path.is_file() or path.suffix.lower() not in ADAPTER_SUFFIXES:
            return None
        try:
            return a1111_short_hash(path)
        except OSError:
            return None

    def encoders(self, adapter: Path) -> tuple[str, ...]:
        """The h94 layout's image encoder folders for `adapter` that lie inside the folder."""
        # Imported with the first image prompt: workflows.image_encoder imports torch, which the server loads with its first model.
        from latentdiff.workflows.image_encoder import layout_folders

        found = (inside(self.root, f) for f in layout_folders(adapter) if (f / "config.json").is_file())
        return tuple(str(f) for f in found if f is not None)

    def prompt_file(self, image, scale, adapter, what: str) -> tuple[dict, PromptFile]:
        """(what the job shows, the PromptFile it holds) of one image prompt."""
        title, path = self.resolve(adapter, f"{what}.adapter")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= MAX_SCALE:
            raise UsageError(f"{what}.scale must be a number from 0 to {MAX_SCALE:g}, got {scale!r}")
        data = picture_bytes(image, f"{what}.image")
        prompt = PromptFile(data, float(scale), str(path), self.encoders(path), what)
        return {"adapter": title, "scale": float(scale)}, prompt


def v1_prompts(models: AdapterModels, prompts) -> tuple[list[dict], tuple[PromptFile, ...]]:
    """The `image_prompts` of a /v1 request (schema.ImagePromptUnit) as (shown, files)."""
    pairs = [models.prompt_file(p.image, p.scale, p.adapter, f"image_prompts[{k}]") for k, p in enumerate(prompts)]
    return [s for s, _ in pairs], tuple(f for _, f in pairs)


def is_ip_unit(models: AdapterModels, unit) -> bool:
    """Whether an A1111 ControlNet unit is an IP-Adapter: its module is one, or its model names an
    adapter of --ip-adapter-dir by name (a hash alone may be a control model's too)."""
    module = (unit.module or "").lower()
    if module.startswith("ip-adapter") or module in FACE_MODULES:
        return True
    if models.root is None or not isinstance(unit.model, str):
        return False
    name = TITLE.fullmatch(unit.model.strip()).group(1).lower()
    return any(name in (e["name"].lower(), e["path"].name.lower()) for e in models.entries())


def a1111_prompt(models: AdapterModels, unit, image: str, what: str) -> tuple[dict, PromptFile]:
    """(shown, PromptFile) of an A1111 IP-Adapter unit (its image already found by the caller)."""
    name = (unit.module or "").lower()
    if name in FACE_MODULES:
        raise UsageError(
            f"{what}.module={unit.module!r}: face-embedding preprocessors need the face detector's weights, which "
            "the server does not run; send the embeddings in /v1 image_prompts (a .npy file) instead"
        )
    if name not in IP_MODULES:
        raise UsageError(
            f"{what}.module={unit.module!r}: an IP-Adapter unit takes one of the modules {', '.join(IP_MODULES)}"
        )
    for field, default in (("guidance_start", 0.0), ("guidance_end", 1.0)):
        if getattr(unit, field) != default:
            raise UsageError(
                f"{what}.{field}={getattr(unit, field)}: latentdiff's IP-Adapter acts on every step; "
                f"send {default:g} for an IP-Adapter unit"
            )
    if unit.control_mode not in ("Balanced", 0):
        raise UsageError(f"{what}.control_mode={unit.control_mode!r}: an IP-Adapter unit takes 'Balanced' only")
    shown, prompt = models.prompt_file(image, unit.weight, unit.model, what)
    return {**shown, "module": name}, prompt
