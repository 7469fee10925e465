"""Resolve a model reference to a local diffusers-format directory (the first stop of loading).

A reference is a local directory, a Hugging Face hub id (`org/name`, resolved through
huggingface_hub so its cache and HF_HUB_OFFLINE are honoured), or None for the model
shipped in this repository under `checkpoints/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.models.configs import check_model_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "checkpoints" / "emoji"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Only what a Stable Diffusion pipeline needs; never the pickle variants unless asked.
_HUB_PATTERNS = ["model_index.json", "latentdiff.json", "*/*.json", "*/*.txt", "*/*.safetensors"]


def default_model_dir() -> Path:
    return Path(os.environ.get("LATENTDIFF_DEFAULT_MODEL", DEFAULT_MODEL_DIR))


def resolve(ref: str | os.PathLike | None, allow_pickle: bool = False) -> Path:
    """The local directory of a model (downloading only when the hub is reachable), checked to be
    a diffusers model of a supported kind with every component folder."""
    path = locate(ref, allow_pickle)
    check_model_dir(path)
    return path


def locate(ref: str | os.PathLike | None, allow_pickle: bool = False) -> Path:
    """The local path a model reference names: the folder itself, the hub cache's snapshot (fetched
    if the hub is reachable), or the shipped default model; not yet checked (configs.check_model_dir)."""
    if ref is None:
        path = default_model_dir()
        if not (path / "model_index.json").is_file():
            raise ModelError(f"the shipped default model is not present at {path}; pass --model DIR or a hub id")
        return path
    path = Path(ref).expanduser()
    if path.exists():
        return path
    text = str(ref)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return _from_hub(text, allow_pickle)
    raise ModelError(f"model {text!r} not found: no such directory, and it is not a hub id like 'org/name'")


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
