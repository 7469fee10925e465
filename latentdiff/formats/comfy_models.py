"""ComfyUI's `models/` folder as `--components` for a transformer file: the text encoders (in
models/text_encoders or models/clip) and the VAE (models/vae) found by their tensors, whatever
their names, and built with configs told from their shapes (formats/encoder_files.py).

Tokenizers: CLIP's BPE vocabulary ships with latentdiff (families/configs/clip_tokenizer, MIT);
T5's (Apache-2.0, a 2.4 MB tokenizer.json) and Qwen's (Apache-2.0, several MB of vocab.json and merges.txt) do
not, and are read from the ComfyUI install the models folder sits in (`comfy/text_encoders/t5_tokenizer`
and `qwen25_tokenizer`, as every ComfyUI ships them). Families served: Flux.1 (CLIP-L, T5-XXL,
ae.safetensors), Chroma (T5-XXL, ae.safetensors), Z-Image (Qwen3-4B, ae.safetensors) and SD 3/3.5 (CLIP-L and
CLIP-G with their projections, T5-XXL optional, its VAE: Flux.1's shapes with SD3's scaling and shift, told by
the transformer file's family, not the VAE file's tensors). Qwen-Image's (Qwen2.5-VL with its vision tower, a
3D VAE) and FLUX.2's (Mistral or Qwen3-8B, FLUX.2's VAE) parts are not built from loose files here: those take a
diffusers folder.
"""

from __future__ import annotations

import math
from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.families.flux_tiny import SCHEDULERS
from latentdiff.families.qwen_tiny import QWEN3_TEMPLATE, Z_IMAGE_SCHEDULER
from latentdiff.families.released import clip_tokenizer
from latentdiff.families.sd3_tiny import SCHEDULER as SD3_SCHEDULER
from latentdiff.families.sd3_tiny import SD3_VAE
from latentdiff.formats.detect import read_header
from latentdiff.formats.encoder_files import LABELS, build_encoder, build_vae, kind_of
from latentdiff.formats.gguf_file import gguf_encoder_kind, gguf_params, is_gguf
from latentdiff.models.assemble import load_tokenizer
from latentdiff.models.components import Components
from latentdiff.models.weights import safetensors_header

ENCODER_DIRS, VAE_DIRS = ("text_encoders", "clip"), ("vae",)
COMFY_FOLDERS = ("text_encoders", "clip", "vae", "diffusion_models", "unet", "checkpoints")
# family -> the Components slots its text encoders fill and the kind of file each takes
SLOTS = {
    "flux": [("text_encoder", "clip_l"), ("text_encoder_2", "t5xxl")],
    "chroma": [("text_encoder", "t5xxl")],
    "z-image": [("text_encoder", "qwen3")],
    "sd3": [("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl")],
}
OPTIONAL = {("sd3", "t5xxl")}  # SD 3/3.5 runs without T5 (zeros in its place), as diffusers and ComfyUI do
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}  # black-forest-labs/FLUX.1-dev's vae/config.json
# The 16-channel VAE files of Flux.1 and SD 3 have the same tensors: the transformer's family says whose
# scaling and shift they take (SD3's: stabilityai/stable-diffusion-3.5-large's vae/config.json).
VAE_FACTORS = {"sd3": SD3_VAE}
# kind -> (where a ComfyUI install keeps its tokenizer, newer first; the tokenizer class)
TOKENIZERS = {
    "t5xxl": (("comfy/text_encoders/t5_tokenizer", "comfy/t5_tokenizer"), "T5TokenizerFast"),
    "qwen3": (("comfy/text_encoders/qwen25_tokenizer",), "Qwen2Tokenizer"),
}
MAX_FILES = 500  # files looked at in a models folder
PATTERNS = ("*.safetensors", "*.gguf")  # GGUF: text encoders (city96's T5), as ComfyUI-GGUF reads them
UNREADABLE = "unreadable"  # scan's key of the files it could not read
_SAID: set[str] = set()  # the notices given (the memory check and the load each pick the files)


def is_comfy_models(folder: Path) -> bool:
    """A folder of loose model files as ComfyUI keeps them (no model_index.json; its subfolders)."""
    return not (folder / "model_index.json").is_file() and any((folder / d).is_dir() for d in COMFY_FOLDERS)


def scan(folder: Path, dirs: tuple[str, ...]) -> dict[str, list[Path]]:
    """kind -> the safetensors files under `folder`/`dirs` whose tensors are of that kind (headers only);
    UNREADABLE -> (file, why) of those that could not be read."""
    found: dict[str, list] = {}
    files = sorted({p.resolve() for d in dirs for pattern in PATTERNS for p in (folder / d).rglob(pattern)})
    for path in files[:MAX_FILES]:
        if not path.is_file():  # a FIFO, a device, a folder named as a file
            found.setdefault(UNREADABLE, []).append((path, "not a regular file"))
            continue
        try:
            kind = _kind(path)
        except (
            ModelError,
            UsageError,
        ) as e:  # UsageError: a GGUF without the gguf package  # a damaged or foreign file is no candidate; the missing part is named if needed
            found.setdefault(UNREADABLE, []).append((path, str(e)))
            continue
        if kind is not None:
            found.setdefault(kind, []).append(path)
    return found


def _kind(path: Path) -> str | None:
    """The encoder or VAE kind of a file, by its tensors (a GGUF text encoder by its architecture)."""
    return gguf_encoder_kind(path) if is_gguf(path) else kind_of(read_header(path)[0])


def _given(files) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for f in files:
        path = Path(f).expanduser()
        if not path.is_file():
            raise UsageError(f"{f}: no such file")
        kind = _kind(path)
        found.setdefault(kind or "", []).append(path.resolve())
    return found


def pick(folder: Path, kind: str, given: dict, found: dict, flag: str, label: str, optional=False) -> Path | None:
    """The one file of `kind`: the one given with `flag`, else the one the folder holds; two is one line, and
    so is none unless the part is `optional` (None)."""
    candidates = given.get(kind) or found.get(kind, [])
    if not candidates and optional:
        _without(folder, kind, found, label)
        return None
    where = f"the {flag} files are" if given.get(kind) else f"--components {folder} holds"
    if len(candidates) > 1:
        names = ", ".join(str(p) for p in candidates)
        raise UsageError(f"{where} {len(candidates)} {LABELS[kind]} files ({names}): choose one with {flag} FILE")
    if not candidates:
        raise UsageError(
            f"--components {folder} holds no {LABELS[kind]} file (looked for its tensors in "
            f"{', '.join(d + '/' for d in (VAE_DIRS if kind == 'vae16' else ENCODER_DIRS))}), which {label} needs; "
            f"give it with {flag} FILE"
        )
    return candidates[0]


def _without(folder: Path, kind: str, found: dict, label: str) -> None:
    """An optional part the folder lacks: said once; refused where an unreadable file may be it."""
    # Here, not at the top: runtime.device imports torch, which the folder's scan (headers only) does not need.
    from latentdiff.runtime.device import notice

    if found.get(UNREADABLE):
        path, why = found[UNREADABLE][0]
        raise UsageError(
            f"--components {folder} holds no readable {LABELS[kind]} file, and {path} could not be read ({why}); "
            f"fix or remove it, or give the {LABELS[kind]} file with --text-encoder FILE"
        )
    message = f"--components {folder} holds no {LABELS[kind]} file: {label} runs without it (zeros in its place)"
    if message not in _SAID:
        _SAID.add(message)
        notice(message)


def chosen_files(folder: Path, family: str, label: str, text_encoders=(), vae=None) -> dict[str, Path]:
    """slot (text_encoder, ..., vae) -> the file that fills it."""
    given, found = _given(text_encoders), scan(folder, ENCODER_DIRS)
    kinds = [kind for _, kind in SLOTS[family]]
    unused = [str(p) for kind, paths in given.items() if kind not in kinds for p in paths]
    if unused:
        takes = ", ".join(LABELS[k] for k in kinds)
        raise UsageError(f"--text-encoder {unused[0]} is none of the encoders {label} takes ({takes}) by its tensors")
    out = {
        slot: pick(folder, kind, given, found, "--text-encoder", label, (family, kind) in OPTIONAL)
        for slot, kind in SLOTS[family]
    }
    given_vae = _given([vae] if vae is not None else [])
    out["vae"] = pick(folder, "vae16", given_vae, scan(folder, VAE_DIRS) if vae is None else {}, "--vae", label)
    return out


def comfy_tokenizer(folder: Path, kind: str):
    """The tokenizer of a `kind` encoder from the ComfyUI install holding `folder` (CLIP's: shipped)."""
    if kind in ("clip_l", "clip_g"):
        return clip_tokenizer(open_clip=kind == "clip_g")
    dirs, cls_name = TOKENIZERS[kind]
    for d in dirs:
        path = folder.resolve().parent / d
        if path.exists():
            tok = load_tokenizer(path, cls_name)  # checked: a FIFO or damaged file is one line
            if kind == "t5xxl":
                tok.model_max_length = 512
            elif not tok.chat_template:  # ComfyUI's files carry none; Z-Image's prompt is a chat turn
                tok.chat_template = QWEN3_TEMPLATE
            return tok
    raise UsageError(
        f"{LABELS[kind]}'s tokenizer is not shipped with latentdiff and {folder.resolve().parent / dirs[0]} (where a "
        "ComfyUI install keeps it) holds none: give --components a diffusers folder of the family, which holds it"
    )


def comfy_components(folder: Path, family: str, label: str, transformer, text_encoders=(), vae=None, pickle=False):
    """Components of a transformer file of `family` with the encoders and VAE of ComfyUI's models `folder`."""
    files = chosen_files(folder, family, label, text_encoders, vae)
    parts = {}
    for slot, kind in SLOTS[family]:
        if files[slot] is None:  # an optional encoder the folder lacks
            continue
        parts[slot] = build_encoder(files[slot], kind, pickle, projection=family == "sd3")
        parts[slot.replace("text_encoder", "tokenizer")] = comfy_tokenizer(folder, kind)
    return Components(
        unet=transformer,
        vae=build_vae(files["vae"], VAE_FACTORS.get(family, FLUX_VAE), pickle),
        scheduler_config=_scheduler(family, transformer),
        defaults={},
        **parts,
    )


def _scheduler(family: str, transformer) -> dict:
    """The released scheduler config (FLUX.1-dev's or -schnell's by the guidance embedding; Z-Image-Turbo's; SD 3.5's)."""
    if family == "z-image":
        return dict(Z_IMAGE_SCHEDULER)
    if family == "sd3":
        return dict(SD3_SCHEDULER)
    schedule = SCHEDULERS[
        "flux-dev" if family == "chroma" or transformer.config.get("guidance_embeds") else "flux-schnell"
    ]
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", **schedule}


def file_params(folder: Path, family: str, label: str, text_encoders=(), vae=None) -> dict[str, int]:
    """slot -> parameter count of the file that fills it (headers only), for the memory check."""
    files = chosen_files(folder, family, label, text_encoders, vae)
    count = {}
    for slot, path in files.items():
        if path is None:
            continue
        if is_gguf(path):
            count[slot] = gguf_params(path)
            continue
        header = safetensors_header(path)
        count[slot] = sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return count
