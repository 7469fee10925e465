"""Single files of the transformer families (Flux.1, SD 3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image)
as users have them: the transformer alone (`flux1-dev.safetensors`, `sd3.5_large.safetensors`
stripped of its encoders, `z_image_turbo_bf16.safetensors`, `qwen_image_fp8_e4m3fn.safetensors`,
ComfyUI's models/diffusion_models/ files, city96's and QuantStack's GGUF quantizations) or a whole checkpoint whose
transformer sits under `model.diffusion_model.`; in bf16/fp16/fp32, in fp8 (e4m3fn / e5m2, plain or
"scaled" with a per-layer scale_weight as ComfyUI writes them) or as GGUF.

The text encoders, their tokenizers and the VAE come from `components`: a diffusers folder of the
same family (its own transformer is not read), or ComfyUI's models folder for Flux.1, Chroma and
Z-Image (formats/comfy_models.py: the files found by their tensors, T5's and Qwen's tokenizers read
from the ComfyUI install). No file carries tokenizers, so even a whole checkpoint needs one. fp8 weights are upcast as they are read
(to bf16, which holds every e4m3fn and e5m2 value exactly; a scaled weight is the product rounded to
bf16) and computed in the compute dtype, so any device runs them. GGUF matrices stay quantized
(formats/gguf_file.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.families.registry import FAMILIES, family_of_folder
from latentdiff.formats.comfy_models import SLOTS, comfy_components, is_comfy_models
from latentdiff.formats.gguf_file import gguf_family, is_gguf, quantized_module, read_gguf_quantized
from latentdiff.formats.transformer_configs import CLASSES, CONFIGS, EXAMPLES, NEEDS
from latentdiff.formats.transformer_keys import SUPPORTED, layout_of, to_diffusers, to_original
from latentdiff.formats.transformer_parts import apply_checkpoint_parts, upcast_fp8
from latentdiff.models.assemble import build, build_module
from latentdiff.models.checks import check_diffusers_config
from latentdiff.models.configs import read_configs
from latentdiff.models.weights import SAFETENSORS, load_state_dict, safetensors_header, sniff_format
from latentdiff.runtime.files import as_umask_allows
from latentdiff.runtime.libraries import quiet_libraries
from latentdiff.runtime.reading import parse_json

# JSON: {"family": ..., "config": the transformer's diffusers config, "pipeline": the folder's pipeline class (optional)}
META_KEY = "latentdiff.transformer"
KONTEXT = "FluxKontextPipeline"  # Flux.1 Kontext's weights are dev's shapes: told by name, metadata or folder
PREFIX = "model.diffusion_model."  # a whole checkpoint's transformer (ComfyUI, Stability)
OTHER_PARTS = ("text_encoders.", "first_stage_model.", "vae.", "cond_stage_model.", "conditioner.")


def transformer_family(path: Path) -> str | None:
    """The family of a transformer file (GGUF, or safetensors in the original layout), else None."""
    if is_gguf(path):
        return gguf_family(path)
    if sniff_format(path) != SAFETENSORS:
        return None
    header = safetensors_header(path)
    meta = header.get("__metadata__") or {}
    if isinstance(meta, dict) and META_KEY in meta:
        return _own(meta, path)["family"]
    return layout_of((k for k in header if k.startswith(PREFIX) or not k.startswith(OTHER_PARTS)), path)


def _own(meta: dict, path: Path) -> dict:
    own = parse_json(meta[META_KEY], f"{path} (latentdiff metadata)", ModelError)
    if not (isinstance(own, dict) and own.get("family") in CONFIGS and isinstance(own.get("config"), dict)):
        raise ModelError(f"{path} has damaged latentdiff transformer metadata")
    if not isinstance(own.get("pipeline", ""), str):
        raise ModelError(f"{path} has damaged latentdiff transformer metadata (its pipeline)")
    return own


def _metadata(path: Path) -> dict | None:
    """The latentdiff metadata of a safetensors transformer file, None where it has none (or is GGUF)."""
    if is_gguf(path):
        return None
    meta = safetensors_header(path).get("__metadata__") or {}
    return _own(meta, path) if isinstance(meta, dict) and META_KEY in meta else None


def pipeline_class(path: Path, components) -> str | None:
    """The pipeline a Flux.1 transformer file runs in where its weights alone do not tell (Kontext has dev's
    shapes; Fill is told by its 384 input features): the class its latentdiff metadata names, else Kontext
    where its file name says kontext (as every released Kontext file's does: flux1-kontext-dev.safetensors,
    flux1-dev-kontext_fp8_scaled.safetensors, flux1-kontext-dev-Q8_0.gguf); None: the components folder's."""
    own = _metadata(path)
    if own is not None and own.get("pipeline") in ("FluxPipeline", KONTEXT):  # written by `latentdiff convert`
        return own["pipeline"]
    if "kontext" in path.name.lower() and not FAMILIES["flux"].inpainting(components):
        return KONTEXT
    return None


def read_transformer(path: Path) -> tuple[str, dict, dict | None]:
    """(family, the file's tensors (fp8 upcast), the config the file carries or None)."""
    if is_gguf(path):
        family, sd = read_gguf_quantized(path)
        return family, sd, None
    own = _metadata(path)
    sd = upcast_fp8(load_state_dict(path))
    family = own["family"] if own else layout_of(sd, path)
    if family is None:
        raise ModelError(f"{path} holds no transformer of {SUPPORTED}")
    return family, sd, (own or {}).get("config")


def _transformer_part(sd: dict) -> dict:
    """The transformer's tensors of a whole checkpoint (prefix removed) or of a transformer file."""
    if any(k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX) :]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return {k: v for k, v in sd.items() if not k.startswith(OTHER_PARTS)}


def check_components(path: Path, family: str, components) -> Path:
    """The components folder for a transformer file of `family`: given, a folder, of that family."""
    label = FAMILIES[family].label
    if components is None:
        raise UsageError(
            f"{path} is the {label} transformer alone; it also needs {NEEDS[family]}: give --components DIR "
            f"(a diffusers folder of {label} such as {EXAMPLES[family]}, which holds them)"
        )
    folder = Path(components).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--components {components}: no such folder")
    if is_comfy_models(folder):
        if family in SLOTS:
            return folder
        served = ", ".join(FAMILIES[f].label for f in SLOTS)
        raise UsageError(
            f"--components {components} is ComfyUI's models folder, which serves {served} transformer files: give a "
            f"diffusers folder of {label} (such as {EXAMPLES[family]}) as --components; your own encoder and VAE "
            "files can replace its ones with --text-encoder FILE and --vae FILE"
        )
    found = family_of_folder(folder)
    if found.name != family:
        raise UsageError(f"--components {components} holds {found.label}, but {path} is the {label} transformer")
    return folder


def build_transformer(family: str, sd: dict, config: dict | None, where):
    """The diffusers transformer of original-layout tensors `sd`, with `config` or one told from their shapes."""
    import diffusers

    quiet_libraries()
    # A GGUF matrix's own shape counts bytes; quant_shape is the matrix's.
    config = config or CONFIGS[family]({k: list(getattr(v, "quant_shape", v.shape)) for k, v in sd.items()}, where)
    if config.get("_class_name", CLASSES[family]) != CLASSES[family]:
        raise ModelError(f"{where}: its config names {config['_class_name']!r}, not {family}'s {CLASSES[family]}")
    check_diffusers_config({**config, "_class_name": CLASSES[family]}, "transformer", f"{where} (transformer config)")
    try:
        converted = to_diffusers(sd, family, where)
    except RuntimeError as e:  # a matrix that does not split as the layout's does (a damaged file)
        raise ModelError(
            f"{where}: a tensor does not split as the {family} layout's: {str(e).splitlines()[0]}"
        ) from None
    cls = getattr(diffusers, CLASSES[family])
    if any(hasattr(v, "quant_type") for v in converted.values()):
        return quantized_module(cls, config, converted, where)
    return build_module(cls, config, converted, where)


def load_transformer_file(path: Path, components=None, allow_pickle: bool = False, text_encoders=(), vae=None):
    """Components of a transformer file (or whole checkpoint) with the rest of the model taken from
    the folder `components` (a diffusers folder, or ComfyUI's models folder with `text_encoders` and
    `vae` files chosen over its own), a whole checkpoint's own VAE and encoders over the folder's."""
    folder = check_components(path, transformer_family(path), components)
    family, sd, config = read_transformer(path)
    transformer = build_transformer(family, _transformer_part(sd), config, path)
    if is_comfy_models(folder):
        label = FAMILIES[family].label
        comps = comfy_components(folder, family, label, transformer, text_encoders, vae, allow_pickle)
    else:
        comps = build(read_configs(folder), allow_pickle, denoiser=False)
        comps.unet = transformer
    apply_checkpoint_parts(comps, sd, family, path)
    pipeline = pipeline_class(path, comps) if family == "flux" else None
    if pipeline is not None:
        comps.index = {**comps.index, "_class_name": pipeline}
    return comps


def save_transformer_file(transformer, out: Path, dtype=None, pipeline: str | None = None) -> Path:
    """The transformer alone in its family's original layout, carrying its config (and the folder's `pipeline`
    class, which tells Flux.1 Kontext from dev) as metadata."""
    from safetensors.torch import save_file

    family = {c: f for f, c in CLASSES.items()}[type(transformer).__name__]
    tensors = to_original(transformer.state_dict(), family)
    cast = (lambda t: t.to(dtype) if t.is_floating_point() else t) if dtype is not None else (lambda t: t)
    own = {"family": family, "config": dict(transformer.config), **({"pipeline": pipeline} if pipeline else {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", META_KEY: json.dumps(own, sort_keys=True, default=list)}
    save_file({k: cast(v).contiguous() for k, v in tensors.items()}, str(out), metadata=metadata)
    as_umask_allows(out)
    return out
