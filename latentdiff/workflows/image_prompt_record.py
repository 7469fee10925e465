"""What an image prompt records (the PNG's metadata, the A1111 line), and the CLI's image-prompt
records (config/image_prompt_flags.py) checked against their files before the model loads: the
picture readable (or the face-embedding file), with the recorded hash where replayed; the adapter
read (so a file that is no IP-Adapter, or a pickle without --allow-pickle, is refused first); its
image encoder there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from latentdiff.config.image_prompt_flags import FACE_FILES
from latentdiff.errors import UsageError
from latentdiff.formats.ip_adapter import AdapterFile, read_adapter
from latentdiff.models.fingerprint import control_hashes
from latentdiff.workflows.image_encoder import encoder_folders, prompt_images, read_embeddings
from latentdiff.workflows.source import pixel_hash


def embedding_hash(faces) -> str:
    """16 hex digits of SHA-256 over face embeddings as float32 (N, D) and their shape: the same
    values from a .npy, a .safetensors or a tensor have the same hash."""
    t = torch.as_tensor(np.array(faces) if isinstance(faces, np.ndarray) else faces).detach()
    t = t.to("cpu", torch.float32).contiguous()
    t = t[None] if t.dim() == 1 else t
    h = hashlib.sha256(f"{tuple(t.shape)}:".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def a1111_module(adapter: AdapterFile) -> str:
    """The A1111 ControlNet extension's preprocessor for `adapter` (how its infotext names it)."""
    if adapter.kind == "faceid":
        return "ip-adapter_face_id"
    if adapter.width == 2048:  # SDXL: ViT-bigG, or ViT-H for the *_vit-h files
        return "ip-adapter_clip_sdxl_plus_vith" if "vit-h" in adapter.path.name.lower() else "ip-adapter_clip_sdxl"
    return "ip-adapter_clip_sd15"


def _path(image):
    return os.path.abspath(image) if isinstance(image, (str, os.PathLike)) else None


def prompt_record(image, inputs, adapter: AdapterFile, scale: float, encoder: Path | None) -> dict:
    """One image prompt as the metadata records it: `image` as the caller gave it, `inputs` its
    checked pictures (a list) or face embeddings (a tensor), the adapter's path, name, kind, our
    hash and A1111's, the image-encoder folder used (None for FaceID)."""
    if isinstance(inputs, torch.Tensor):
        path, digest = _path(image), embedding_hash(inputs)
    else:
        given = list(image) if isinstance(image, (list, tuple)) else [image]
        path, digest = [_path(x) for x in given], [pixel_hash(im) for im in inputs]
        if len(given) == 1:
            path, digest = path[0], digest[0]
    full, short = control_hashes(adapter.path)
    return {
        "image": path,
        "image_hash": digest,
        "scale": float(scale),
        "adapter": str(adapter.path.resolve()),
        "adapter_name": adapter.path.stem,
        "adapter_kind": adapter.kind,
        "adapter_hash": full,
        "a1111_hash": short,
        "module": a1111_module(adapter),
        "image_encoder": None if encoder is None else str(encoder),
    }


def _input_hash(image: str, name: str) -> str:
    """The hash prompt_record gives the file `image`: its face embeddings' or its pixels'."""
    if Path(image).suffix.lower() in FACE_FILES:
        return embedding_hash(read_embeddings(Path(image), name))
    return pixel_hash(prompt_images(image, name)[0])


def checked_files(records: list[dict], allow_pickle: bool, what: str = "--image-prompt"):
    """([(image, scale, adapter read), ...], the image-encoder folder) for the CLI's checked records,
    every file checked first; a UsageError names the first bad one."""
    adapters, out, encoders = {}, [], []
    for k, r in enumerate(records):
        name = f"{what} {k + 1}"
        key = os.path.abspath(r["adapter"])
        if key not in adapters:
            adapters[key] = read_adapter(Path(r["adapter"]), allow_pickle, f"{name}: --ip-adapter")
        if adapters[key].kind == "faceid" and Path(r["image"]).suffix.lower() not in FACE_FILES:
            raise UsageError(f"{name}: a FaceID adapter takes face embeddings as a .npy or .safetensors file")
        digest = _input_hash(r["image"], name)
        if r.get("image_hash") and digest != r["image_hash"]:
            raise UsageError(
                f"{name}: {r['image']} is not the image prompt recorded (hash {digest}, recorded "
                f"{r['image_hash']}); give --image-prompt IMG to use it anyway"
            )
        folder = r.get("image_encoder")
        if folder and not Path(folder).is_dir():
            raise UsageError(f"{name}: image encoder {folder} is not a folder")
        if adapters[key].kind != "faceid":
            encoder_folders(adapters[key], folder, name)  # one is there (a FaceID adapter needs none)
            encoders += [folder] if folder else []
        out.append((r["image"], r["scale"], adapters[key]))
    if len(set(encoders)) > 1:
        raise UsageError("the image prompts use different image encoders; give one --image-encoder DIR")
    return out, (encoders[0] if encoders else None)
