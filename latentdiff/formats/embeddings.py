"""Textual-inversion embeddings (Gal et al. 2022): new words whose token vectors come from a file.

Read: A1111 `.pt` files (`string_to_param["*"]`, loaded through torch's weights_only unpickler,
which refuses anything but tensors and plain containers), A1111 / civitai `.safetensors`
(`emb_params`; SDXL's `clip_l` + `clip_g`), and diffusers' `learned_embeds` ({token: vector}).
An embedding of n vectors becomes the tokens TOKEN, TOKEN_1, ... TOKEN_{n-1}, and TOKEN in a
prompt is written out to all of them before tokenizing, as diffusers' `load_textual_inversion`
does. The token is the file's name unless given (`FILE:TOKEN`); matching ignores case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.models.fingerprint import short_hash
from latentdiff.models.weights import load_state_dict
from latentdiff.runtime.reading import MiB, check_regular, size_text

MAX_FILE_BYTES = 64 * MiB  # 75 vectors of SDXL's 768 + 1280 floats take 600 KB
MAX_VECTORS = 2_500  # more tokens than a prompt of params.MAX_PROMPT_CHARS can hold


@dataclass(frozen=True)
class EmbeddingSpec:
    path: Path
    token: str


def parse_spec(text: str, token: str | None = None) -> EmbeddingSpec:
    """`FILE[:TOKEN]` (given `token`, `text` is the file as it is); the file must exist, the token
    defaults to the file's stem."""
    if token is not None:
        path = text
        if not isinstance(token, str):
            raise UsageError(f"--embedding {path}: the token must be a word (a string), got {token!r}")
    else:
        head, sep, tail = str(text).rpartition(":")
        path, token = (head, tail) if sep and head and "/" not in tail and "\\" not in tail else (text, "")
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"--embedding {path} does not exist")
    check_regular(path, "--embedding")  # a FIFO would block the read
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(
            f"--embedding {path} is {size_text(path.stat().st_size)}; an embedding file is at most "
            f"{size_text(MAX_FILE_BYTES)} (they hold a few vectors: kilobytes)"
        )
    token = token.strip() or path.stem
    if not re.fullmatch(r"[^\s()\[\]:\\<>]+", token):
        raise UsageError(f"--embedding token {token!r} must be one word without brackets, ':' or '\\'")
    return EmbeddingSpec(path, token)


def read_vectors(path: Path) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """{name: (n, D)} vectors of an embedding file ("*" for a single-encoder file)."""
    import torch

    sd = load_state_dict(path, allow_pickle=True)  # pickle only through weights_only (see the docstring)
    if isinstance(sd.get("string_to_param"), dict):  # A1111 .pt
        sd = {"*": next(iter(sd["string_to_param"].values()))}
    elif "emb_params" in sd:  # A1111 .safetensors
        sd = {"*": sd["emb_params"]}
    tensors = {
        k: v for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and 1 <= v.dim() <= 2
    }
    if not tensors or (len(tensors) > 1 and not {"clip_l", "clip_g"} & set(tensors)):
        raise ModelError(
            f"--embedding {path} holds no textual-inversion vectors (expected A1111 string_to_param / "
            "emb_params, clip_l / clip_g, or one {token: vector} entry)"
        )
    for name, v in tensors.items():
        if v.numel() == 0:
            raise ModelError(f"--embedding {path} holds no vectors: its tensor {name!r} has the shape {tuple(v.shape)}")
        if v.numel() // v.shape[-1] > MAX_VECTORS:
            raise ModelError(
                f"--embedding {path} holds {v.numel() // v.shape[-1]:,} vectors; at most {MAX_VECTORS:,} "
                "(more tokens than a prompt holds)"
            )
        if not torch.isfinite(v).all():
            raise ModelError(f"--embedding {path} holds vectors that are not finite (NaN or infinity)")
    return {k: v.reshape(-1, v.shape[-1]) for k, v in tensors.items()}


def vectors_for(vectors: dict, dim: int, path: Path):
    """The vectors that fit an encoder with `dim`-wide token embeddings."""
    fits = [v for v in vectors.values() if v.shape[-1] == dim]
    if len(fits) != 1:
        widths = ", ".join(str(v.shape[-1]) for v in vectors.values())
        raise ModelError(f"--embedding {path} has vectors {widths} wide; this model's text encoder takes {dim}")
    return fits[0]


def add_embedding(spec: EmbeddingSpec, encoders: list[tuple]) -> list[str]:
    """Add the embedding's tokens to every (tokenizer, text_encoder) pair; return the tokens."""
    import torch

    vectors = read_vectors(spec.path)
    tokens = None
    for tokenizer, text_encoder in encoders:
        table = text_encoder.get_input_embeddings()
        vecs = vectors_for(vectors, table.weight.shape[1], spec.path)
        tokens = [spec.token] + [f"{spec.token}_{i}" for i in range(1, len(vecs))]
        if tokenizer.add_tokens(tokens) != len(tokens):
            raise UsageError(f"--embedding token {spec.token!r} is already taken; choose another with FILE:TOKEN")
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        ids = tokenizer.convert_tokens_to_ids(tokens)
        with torch.no_grad():
            table = text_encoder.get_input_embeddings()
            table.weight[ids] = vecs.to(table.weight.device, table.weight.dtype)
    return tokens


def describe(spec: EmbeddingSpec, tokens: list[str]) -> dict:
    """What an image records (A1111's "TI hashes" entry: the whole file's sha256, 12 hex)."""
    return {
        "token": spec.token,
        "hash": short_hash(spec.path, whole_file=True),
        "vectors": len(tokens),
        "path": str(spec.path.resolve()),
    }


def expand(text: str, multi: dict[str, list[str]]) -> str:
    """Write each multi-vector TOKEN of `text` out as "TOKEN TOKEN_1 ..." (any case)."""
    for token, tokens in multi.items():
        text = re.sub(rf"(?<![\w]){re.escape(token)}(?![\w])", " ".join(tokens), text, flags=re.IGNORECASE)
    return text


def add_embeddings(components, specs: list[EmbeddingSpec]) -> tuple[list[dict], dict[str, list[str]]]:
    """Add every embedding to the model's tokenizer(s) and text encoder(s); return what images
    record and the multi-vector tokens `expand` writes out."""
    encoders = [(components.tokenizer, components.text_encoder)]
    if getattr(components, "text_encoder_2", None) is not None:  # SDXL: clip_l and clip_g
        encoders.append((components.tokenizer_2, components.text_encoder_2))
    records, multi = [], {}
    for spec in specs:
        tokens = add_embedding(spec, encoders)
        records.append(describe(spec, tokens))
        if len(tokens) > 1:
            multi[spec.token] = tokens
    return records, multi


def embedding_files(folder) -> list[str]:
    """Every embedding file (.pt, .safetensors, .bin) in `folder` and below, sorted: A1111's
    embeddings folder, each written in the prompt by its file name. None: none."""
    if folder is None:
        return []
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UsageError(f"--embedding-dir {folder} is not a folder")
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".pt", ".safetensors", ".bin")]
