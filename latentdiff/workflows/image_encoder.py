"""What an IP-Adapter's image tokens are made from: the CLIP vision encoder, found where users keep
it, and the pictures or face embeddings of an image prompt, read and checked.

The encoder: an `image_encoder` folder given explicitly (or a folder holding one, or a list of such
folders: the first whose widths fit; the server passes those inside its --ip-adapter-dir), else the
h94/IP-Adapter layout beside the adapter file: `<dir>/image_encoder/`, then
`<dir>/../models/image_encoder/` (ViT-H, which the SD 1.x adapters and SDXL's `*_vit-h` ones use)
and `<dir>/../sdxl_models/image_encoder/` (ViT-bigG); the first whose widths fit the adapter wins.
Offline only; loaded once per pipeline and kept (`pipe._image_encoders`).

Face embeddings (FaceID): the face-recognition model's output, as the user's own detector (e.g.
insightface's `normed_embedding`) writes it: a `.npy` (numpy, no pickle) or `.safetensors` holding
one tensor of shape (512,) for one face or (N, 512) for N faces, or such a tensor/array in Python.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from latentdiff.errors import LatentDiffError, ModelError, UsageError
from latentdiff.formats.ip_adapter import AdapterFile
from latentdiff.images.read import load_image
from latentdiff.models.assemble import load_image_encoder
from latentdiff.models.weights import load_state_dict
from latentdiff.runtime.reading import read_bytes

MAX_IMAGES = 8  # pictures (or faces) in one image prompt
MAX_EMBEDDING_BYTES = 1 << 20


def encoder_folders(adapter: AdapterFile, given, name: str) -> list[Path]:
    """The image-encoder folders there are for `adapter` (`given`, else the h94 layout's beside
    it), in the order they are tried; a UsageError where there is none."""
    candidates = _candidates(adapter.path, given)
    found = [c for c in candidates if (c / "config.json").is_file()]
    if not found:
        looked = ", ".join(str(c) for c in candidates) or "no folder"
        raise UsageError(
            f"{name}: no image encoder for {adapter.path.name} (looked in {looked}); pass "
            "image_encoder=DIR (generate --image-encoder DIR): the image_encoder folder of h94/IP-Adapter"
        )
    return found


def encoder_for(pipe, adapter: AdapterFile, given, name: str):
    """(the CLIP vision encoder on the pipeline's device in its dtype, its image processor, its
    folder) that feed `adapter`: `given` (a folder) or the one the h94 layout has beside the
    adapter file."""
    widths = []
    for folder in encoder_folders(adapter, given, name):
        encoder = _load(pipe, folder, name)
        width = _width(encoder, adapter)
        if width == adapter.embed_dim:
            return encoder, _processor(encoder), folder.resolve()
        widths.append(f"{folder} gives {width}")
    raise UsageError(
        f"{name}: {adapter.path.name} takes {adapter.embed_dim}-wide image features, but the image encoder "
        f"{'; '.join(widths)}; pass the image encoder it was trained with"
    )


def _candidates(adapter: Path, given) -> list[Path]:
    """`given` (a folder, or a list of them: the first that fits wins), else the h94 layout's."""
    if isinstance(given, (list, tuple)):
        return [c for one in given for c in _candidates(adapter, one)]
    if given is not None:
        folder = Path(given)
        return [folder / "image_encoder"] if (folder / "image_encoder" / "config.json").is_file() else [folder]
    return layout_folders(adapter)


def layout_folders(adapter: Path) -> list[Path]:
    """Where the h94/IP-Adapter layout keeps the image encoder of the adapter file `adapter`."""
    here = adapter.resolve().parent
    out = [
        here / "image_encoder",
        here.parent / "models" / "image_encoder",
        here.parent / "sdxl_models" / "image_encoder",
    ]
    return list(dict.fromkeys(out))


def _width(encoder, adapter: AdapterFile) -> int:
    """What the encoder gives the adapter: hidden states for Plus/Full-Face, image embeds for base."""
    config = encoder.config
    return int(config.hidden_size if adapter.kind in ("plus", "full") else config.projection_dim)


def _load(pipe, folder: Path, name: str):
    cache = pipe.__dict__.setdefault("_image_encoders", {})
    key = folder.resolve()
    if key not in cache:
        try:
            encoder = load_image_encoder(folder, getattr(pipe, "allow_pickle", False), "cpu", pipe.dtype)
        except ModelError as e:
            raise ModelError(f"{name}: image encoder {e}") from None
        cache[key] = encoder.to(pipe.device)
    return cache[key]


def _processor(encoder):
    """The image processor diffusers' load_ip_adapter makes for a pipeline without one."""
    from transformers import CLIPImageProcessor  # seconds to import: only with an image prompt

    size = encoder.config.image_size
    return CLIPImageProcessor(size=size, crop_size=size)


def prompt_images(image, name: str) -> list:
    """An image prompt's pictures as RGB PIL images: a path, a PIL image, or a list of them."""
    from PIL import Image

    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images or len(images) > MAX_IMAGES:
        raise UsageError(f"{name}.image must be 1 to {MAX_IMAGES} pictures, got {len(images)}")
    out = []
    for one in images:
        if isinstance(one, (str, Path)):
            try:
                one = load_image(one)
            except LatentDiffError as e:
                raise UsageError(f"{name}.image {one}: {e}") from None
        if not isinstance(one, Image.Image):
            raise UsageError(f"{name}.image must be an image file's path or a PIL image (or a list of them)")
        out.append(one.convert("RGB"))
    return out


def face_embeddings(source, dim: int, name: str) -> torch.Tensor:
    """A FaceID prompt's face embeddings as a float32 (N, dim) tensor."""
    if isinstance(source, (str, Path)):
        source = read_embeddings(Path(source), name)
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(np.array(source))
    if not isinstance(source, torch.Tensor) or not source.is_floating_point():
        raise UsageError(
            f"{name}.image must be a face-embedding file (.npy or .safetensors) or a float tensor for a FaceID adapter"
        )
    emb = source.detach().to("cpu", torch.float32)
    emb = emb[None] if emb.dim() == 1 else emb
    if emb.dim() != 2 or emb.shape[-1] != dim or not 1 <= emb.shape[0] <= MAX_IMAGES:
        raise UsageError(
            f"{name}: face embeddings must have shape ({dim},) or (N, {dim}) with N up to {MAX_IMAGES}, "
            f"got {tuple(source.shape)}"
        )
    if not torch.isfinite(emb).all():
        raise UsageError(f"{name}: the face embeddings hold NaN or infinite values")
    return emb


def read_embeddings(path: Path, name: str):
    """The array or tensor a face-embedding file (.npy, .safetensors) holds."""
    if path.suffix.lower() == ".npy":
        data = read_bytes(path, f"{name}.image", MAX_EMBEDDING_BYTES)
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UsageError(f"{name}.image {path} is not a numpy array file: {e}") from None
    if path.suffix.lower() == ".safetensors":
        try:
            tensors = list(load_state_dict(path).values())
        except ModelError as e:
            raise UsageError(f"{name}.image: {e}") from None
        if len(tensors) != 1:
            raise UsageError(f"{name}.image {path} must hold one tensor (the face embeddings), not {len(tensors)}")
        return tensors[0]
    raise UsageError(f"{name}.image {path}: a FaceID adapter takes face embeddings as a .npy or .safetensors file")
