"""What an image records about how it was made: model weights hash, library versions."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from latentdiff.models.weights import SAFETENSORS, find_weight_files, sniff_format

WEIGHTED_COMPONENTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
_CACHE = Path(os.environ.get("LATENTDIFF_CACHE", Path.home() / ".cache" / "latentdiff")) / "hashes.json"


def _file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so big models are hashed once."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        cache = json.loads(_CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):  # valid JSON but not ours: start afresh (it is only a cache)
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    cache[key] = h.hexdigest()
    try:
        _CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = _CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(_CACHE)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return cache[key]


def model_hash(model_dir: Path) -> str:
    """A short hash over every weight file of the model (unet, vae, text encoders); for a
    single-file checkpoint A1111's "Model hash" (the first 10 hex digits of its sha256)."""
    if model_dir.is_file():
        return _file_sha256(model_dir)[:10]
    h = hashlib.sha256()
    for comp in WEIGHTED_COMPONENTS:
        d = model_dir / comp
        if not d.is_dir():
            continue
        for f in find_weight_files(d):
            h.update(_file_sha256(f).encode())
    return h.hexdigest()[:12]


def short_hash(path: Path, whole_file: bool = False) -> str:
    """The 12 hex digits A1111 writes in "Lora hashes" / "TI hashes" and civitai looks up. For a
    LoRA in safetensors, the sha256 of its tensor data without the header (civitai's AutoV3,
    which survives metadata edits); for other files and `whole_file`, of the whole file."""
    import struct

    if whole_file or sniff_format(path) != SAFETENSORS:
        return _file_sha256(path)[:12]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n)
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:12]


@lru_cache(maxsize=1)
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("latentdiff", "torch", "diffusers", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def a1111_short_hash(path: Path) -> str:
    """A1111's old model hash, which its ControlNet extension writes beside a control model's name
    (`control_v11p_sd15_canny [d14c016b]`): 8 hex digits of the sha256 of the 64 KiB from 1 MiB on."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def control_hashes(path: Path) -> tuple[str, str]:
    """(our hash, A1111's short hash) of a ControlNet or T2I-Adapter: a single file's first 10 hex
    digits of its sha256 (as model_hash); a diffusers folder's 12 over its weight files' sha256s,
    the short hash of its first weight file."""
    if path.is_file():
        return _file_sha256(path)[:10], a1111_short_hash(path)
    files = find_weight_files(path)
    h = hashlib.sha256()
    for f in files:
        h.update(_file_sha256(f).encode())
    return h.hexdigest()[:12], a1111_short_hash(files[0])
