"""Resolve a model reference to a local diffusers-format directory.

A reference is a local directory, a Hugging Face hub id (`org/name`, resolved through
huggingface_hub so its cache and HF_HUB_OFFLINE are honoured), or None for the model
shipped in this repository under `checkpoints/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from latentdiff.errors import ModelError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "checkpoints" / "emoji"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Only what a Stable Diffusion pipeline needs; never the pickle variants unless asked.
_HUB_PATTERNS = ["model_index.json", "latentdiff.json", "*/*.json", "*/*.txt", "*/*.safetensors"]


def default_model_dir() -> Path:
    return Path(os.environ.get("LATENTDIFF_DEFAULT_MODEL", DEFAULT_MODEL_DIR))


def resolve(ref: str | os.PathLike | None, allow_pickle: bool = False) -> Path:
    """Return the local directory of a model, downloading only when the hub is reachable."""
    if ref is None:
        path = default_model_dir()
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"the shipped default model is not present at {path}; pass --model DIR or a hub id"
            )
        return check_model_dir(path)
    path = Path(ref).expanduser()
    if path.exists():
        return check_model_dir(path)
    text = str(ref)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return check_model_dir(_from_hub(text, allow_pickle))
    raise ModelError(f"model {text!r} not found: no such directory, and it is not a hub id like 'org/name'")


def check_model_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ModelError(f"model path {path} is not a directory")
    if not any(path.iterdir()):
        raise ModelError(f"model directory {path} is empty")
    from latentdiff.formats.detect import SUPPORTED, describe_folder

    what = describe_folder(path)
    if what:
        raise ModelError(f"{path} is {what}, not a model this can generate with; supported: {SUPPORTED}")
    if not (path / "model_index.json").is_file():
        raise ModelError(f"{path} is not a diffusers-format model: model_index.json is missing")
    from latentdiff.models.checks import read_json_object

    read_json_object(path / "model_index.json", "model index")
    missing = [c for c in required_components(path) if not (path / c).is_dir()]
    if missing:
        raise ModelError(f"model {path} lacks component folder(s): {', '.join(missing)}")
    return path


def required_components(path: Path) -> list[str]:
    """The component folders a model needs: SD's five, SDXL's with `text_encoder_2` and
    `tokenizer_2`, an SDXL refiner's without the first encoder (as model_index.json says)."""
    from latentdiff.models.components import TEXT_PARTS, read_index, text_encoder_class

    index = read_index(path)
    needed = ["unet", "vae", "scheduler"]
    for te_name, tok_name in TEXT_PARTS:
        if text_encoder_class(index, path, te_name) is not None:
            needed += [te_name, tok_name]
    return needed


def _from_hub(repo_id: str, allow_pickle: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of diffusers
        raise ModelError("huggingface_hub is not installed; cannot resolve hub id " + repo_id) from None
    patterns = _HUB_PATTERNS + (["*/*.bin"] if allow_pickle else [])
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # noqa: BLE001 - hub errors have many types; all mean "not available"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}"
        raise ModelError(
            f"model {repo_id!r} is not a local folder, nor in the Hugging Face cache, and could not be "
            f"downloaded ({why}); check the path, or download it while online"
        ) from None
