"""LoRA files at generation, merged into the model's weights with a scale; several stack.

Read, on SD 1.x/2.x and SDXL: kohya / A1111 files (`lora_unet_*`, `lora_te_*`, SDXL's `lora_te1_*` /
`lora_te2_*` and SGM block names, with `alpha`), the LyCORIS variants diffusers' converter maps
(LoCon), diffusers / peft files, and latentdiff's own LoRA runs (a folder: the file its
latentdiff.json names, else `pytorch_lora_weights.safetensors`). The key mapping is diffusers' own
(`lora_state_dict` -> `_convert_non_diffusers_lora_to_diffusers`); we never hand-map keys.
Each LoRA is loaded, fused with its scale and unloaded before the next, so the result is
W + sum(scale_i * delta_i) and the model stays plain (no per-step LoRA overhead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import latentdiff.config.params as params
from latentdiff.errors import ModelError, UsageError
from latentdiff.formats.gguf_file import is_quantized
from latentdiff.formats.lora_merge import lora_file
from latentdiff.models.fingerprint import short_hash
from latentdiff.models.weights import load_state_dict
from latentdiff.runtime.reading import check_regular

# File names every run used to share: they name no LoRA in particular.
GENERIC_STEMS = ("lora_kohya", "pytorch_lora_weights")


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    scale: float = 1.0
    te_scale: float | None = None  # the text encoder's own scale (ComfyUI's strength_clip); None: `scale`

    @property
    def name(self) -> str:
        """What A1111 calls it: the stem of the weights file (the file one copies into its
        models/Lora); for a run folder whose file has a generic name, the folder's name."""
        if not self.path.is_dir():
            return self.path.stem
        stem = self.file.stem
        return self.path.name if stem in GENERIC_STEMS else stem

    @property
    def file(self) -> Path:
        return lora_file(self.path) if self.path.is_dir() else self.path


def _numbers(text: str) -> tuple[str, list[float]]:
    """`text` as PATH and up to two numbers after ':' (read from the right; a second only where the
    path before the first does not exist)."""
    path, numbers = text, []
    while len(numbers) < 2:
        head, sep, tail = path.rpartition(":")
        try:
            number = float(tail) if sep and head else None
        except ValueError:
            number = None
        if number is None or (numbers and Path(path).expanduser().exists()):
            break
        path, numbers = head, [number, *numbers]
    return path, numbers


def parse_spec(text: str, flag: str = "--lora", scale=None, te_scale=None) -> LoraSpec:
    """`PATH[:SCALE[:TE_SCALE]]` (scale 1 when omitted, the text encoder's scale the same; given
    `scale`, `text` is the path as it is); the file or LoRA folder must exist, the scales be finite
    and within params.MAX_LORA_SCALE."""
    path = text
    if scale is None:
        path, numbers = _numbers(str(text))
        scale, te_scale = (numbers + [None])[:2] if numbers else (1.0, None)
    scale = params.lora_scale(lambda name: f"{flag} {path}: the {name}", scale)
    if te_scale is not None:
        te_scale = params.lora_scale(lambda name: f"{flag} {path}: the text encoder's {name}", te_scale)
    spec = LoraSpec(Path(path).expanduser(), scale, te_scale)
    if not spec.path.exists():
        raise UsageError(f"{flag} {path} does not exist")
    if spec.path.is_dir() and not spec.file.exists():
        raise UsageError(f"{flag} {path} is a folder without {spec.file.name}")
    check_regular(spec.file, flag)  # a FIFO would block the read
    return spec


def describe(spec: LoraSpec) -> dict:
    """What an image records about a LoRA it was made with (A1111's "Lora hashes" entry)."""
    te = {} if spec.te_scale is None else {"te_scale": spec.te_scale}
    return {
        "name": spec.name,
        "hash": short_hash(spec.file),
        "scale": spec.scale,
        **te,
        "path": str(spec.path.resolve()),
    }


def apply_loras(components, specs: list[LoraSpec], allow_pickle: bool = False, backup: dict | None = None) -> None:
    """Merge each LoRA into the weights of `components` with its scale. A scale of 0 is
    checked (the file must fit the model) but leaves the weights exactly as they were.
    `backup`: filled with {layer: (weight, bias)} as they were before the first merge into
    each layer, for `restore` (a prompt's <lora:...> tags merge for one call only)."""
    if not specs:
        return
    if is_quantized(components.unet):
        raise UsageError(
            f"LoRA {specs[0].path} cannot merge into a GGUF model's quantized weights; use a safetensors "
            "transformer file (bf16 or fp8) with LoRA files"
        )
    host = _host(components)
    parts = [p for p in host._lora_loadable_modules if getattr(host, p, None) is not None]
    for i, spec in enumerate(specs):
        state = load_state_dict(spec.file, allow_pickle)
        check_tensors(spec, state)
        if layout(state) == CONTROL:  # it widens the transformer's input for a control image's latents
            raise ModelError(
                f"--lora {spec.path} is {CONTROL}: it needs a control image, which latentdiff does not take yet"
            )
        name = f"lora_{i}"
        _load(host, spec, state, name, parts)
        if backup is not None:
            _back_up(host, parts, backup)
        for group, scale in _scales(spec, parts):
            if scale != 0:
                host.fuse_lora(components=group, lora_scale=scale, adapter_names=[name])
        host.unload_lora_weights()


_PAIRS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up")


def check_tensors(spec: LoraSpec, state: dict) -> None:
    """What diffusers' loaders would fail on with an IndexError or a torch traceback, or merge
    silently as NaN weights (found by the fuzzing): low-rank factors that are not floating matrices
    (2-D, or 4-D for convolutions), an alpha that is not one number, values that are not finite."""
    import torch

    for key, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        factor = any(p + "." in key for p in _PAIRS)
        if factor and not (v.is_floating_point() and v.dim() in (2, 4) and v.numel()):
            raise ModelError(
                f"--lora {spec.path}: tensor {key[:120]!r} is {str(v.dtype).removeprefix('torch.')} of the shape "
                f"{tuple(v.shape)}; a LoRA factor is a matrix of floats (2-D, or 4-D for a convolution)"
            )
        if key.endswith(".alpha") and v.numel() != 1:
            raise ModelError(f"--lora {spec.path}: {key[:120]!r} holds {v.numel()} values; an alpha is one number")
        if (v.is_floating_point() or v.is_complex()) and not torch.isfinite(v).all():
            raise ModelError(
                f"--lora {spec.path}: tensor {key[:120]!r} holds values that are not finite (NaN or infinity)"
            )


def _scales(spec, parts: list[str]) -> list[tuple[list[str], float]]:
    """The parts merged at each scale: one scale for all (`--lora`), or a tag's text encoder and
    UNet multipliers (`<lora:name:te:unet>`)."""
    te, unet = spec.scale if spec.te_scale is None else spec.te_scale, spec.scale
    if te == unet:
        return [(parts, unet)]
    denoiser = ("unet", "transformer")
    return [([p for p in parts if p not in denoiser], te), ([p for p in parts if p in denoiser], unet)]


def _back_up(host, parts: list[str], backup: dict) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for part in parts:
        for m in getattr(host, part).modules():
            if isinstance(m, BaseTunerLayer) and m.get_base_layer() not in backup:
                base = m.get_base_layer()
                bias = getattr(base, "bias", None)
                backup[base] = (base.weight.detach().clone(), None if bias is None else bias.detach().clone())


def restore(backup: dict) -> None:
    """The layers `apply_loras(..., backup=)` merged into, back to their weights before it."""
    import torch

    with torch.no_grad():
        for layer, (weight, bias) in backup.items():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
    backup.clear()


def _load(host, spec: LoraSpec, state: dict, name: str, parts: list[str]) -> None:
    from diffusers.utils import logging
    from peft.tuners.tuners_utils import BaseTunerLayer

    level = logging.get_verbosity()
    logging.set_verbosity(logging.CRITICAL)  # diffusers logs the error it then raises: say it once
    try:
        host.load_lora_weights(state, adapter_name=name)
    # AssertionError: diffusers' kohya Flux converter asserts the released model's widths
    except (ValueError, KeyError, IndexError, RuntimeError, TypeError, AttributeError, AssertionError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else _UNSAID.get(type(e), type(e).__name__)
        raise ModelError(f"--lora {spec.path} does not fit this model: {why[:300]} ({layout(state)})") from None
    finally:
        logging.set_verbosity(level)
    modules = [m for part in parts for m in getattr(host, part).modules()]
    if not any(isinstance(m, BaseTunerLayer) for m in modules):
        raise ModelError(
            f"--lora {spec.path}: none of its {len(state)} tensors name a layer of this model "
            f"(a LoRA for another architecture, or not a LoRA file; {layout(state)})"
        )


# (what a key holds, the layout it marks), first match wins: the trainers' layouts diffusers' loaders tell apart
CONTROL = "a Black Forest Labs Control LoRA (Canny/Depth)"
_LAYOUTS = (
    ("query_norm.scale", CONTROL),
    (".processor.", "an XLabs LoRA"),
    ("lora_transformer_", "a kohya LoRA of diffusers' layer names"),
    ("lora_unet_", "a kohya/A1111 LoRA"),
    ("lora_te", "a kohya/A1111 LoRA"),
    ("diffusion_model.", "a LoRA in the original (Black Forest Labs/Stability/ComfyUI) key layout"),
    (".lora_A.", "a diffusers/peft LoRA"),
    (".lora.down.", "a diffusers LoRA (the older layout)"),
)


_UNSAID = {AssertionError: "its tensors' shapes are not the ones diffusers' converter of its layout expects"}


def layout(state: dict) -> str:
    """Which trainer's layout a LoRA file's keys are in, as users know it (for a refusal's line)."""
    for mark, name in _LAYOUTS:
        if any(mark in k for k in state):
            return name
    return "keys of no LoRA layout latentdiff knows"


def _host(components):
    """The model's family's diffusers pipeline around our modules, for its LoRA loaders."""
    # Here, not at the top: they import torch, which lora.py must not pay for at start-up.
    from latentdiff.families.registry import family_of
    from latentdiff.sampling.loop import make_scheduler

    return family_of(components).lora_host(components, make_scheduler(components.scheduler_config))
