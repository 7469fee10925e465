"""Find, count and read component weight files (safetensors by default, pickle only on opt-in)
and assign them to a module built on the meta device.

The format is decided by the file's bytes, never by its extension: a `.safetensors`
file that is really a pickle is refused like any other pickle.
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.models.checkpoint_names import checkpoint_names
from latentdiff.models.files import confined, is_present, read_json_object
from latentdiff.runtime.memory import allocation_errors
from latentdiff.runtime.reading import MiB, open_regular, parse_json, size_text

SAFETENSORS, PICKLE_ZIP, PICKLE_RAW, UNKNOWN = "safetensors", "pickle-zip", "pickle", "unknown"
PICKLE_FLAG = "--allow-pickle"
_STEMS = ("diffusion_pytorch_model", "model")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
# Old CLIP checkpoints carry position_ids as a persistent buffer; newer code makes it non-persistent.
_IGNORABLE_UNEXPECTED = ("text_model.embeddings.position_ids", "embeddings.position_ids")
# A header lists each tensor's name, dtype, shape and offsets in ~100 bytes: SDXL's ~2,500 tensors
# take ~250 KB. Parsing one costs ~10x its size in Python objects, so 16 MiB bounds that to ~200 MB
# (safetensors' own cap, 100 MB, would allow 1 GB+).
MAX_HEADER_BYTES = 16 * MiB


def sniff_format(path: Path) -> str:
    """Tell safetensors from pickle by content."""
    with os.fdopen(open_regular(path, "weights file", ModelError), "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return PICKLE_ZIP  # torch.save's zip container holds a pickle
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        # Before the pickle test: a header of 128 + 256k bytes also starts with 0x80.
        if n >= 2 and head[8:9] == b"{":  # any length: safetensors_header says what is wrong with it
            return SAFETENSORS
    if head[:1] == b"\x80":
        return PICKLE_RAW
    return UNKNOWN


def find_weight_files(component_dir: Path) -> list[Path]:
    """The weight file(s) of one component, preferring full-precision safetensors."""
    for suffix in (".safetensors", ".fp16.safetensors"):
        for stem in _STEMS:
            if is_present(component_dir / f"{stem}{suffix}", "weights file"):
                return [component_dir / f"{stem}{suffix}"]
    for index in sorted(component_dir.glob("*.safetensors.index.json")) + sorted(
        component_dir.glob("*.bin.index.json")
    ):
        return _shards(index, component_dir)
    for suffix in _PICKLE_SUFFIXES:
        for stem in _STEMS:
            if is_present(component_dir / f"{stem}{suffix}", "weights file"):
                return [component_dir / f"{stem}{suffix}"]
    found = sorted(p.name for p in component_dir.glob("*") if p.suffix in (".safetensors", *_PICKLE_SUFFIXES))
    if found:
        return [component_dir / found[0]]
    raise ModelError(
        f"no weights file in {component_dir} (expected diffusion_pytorch_model.safetensors or model.safetensors)"
    )


def _shards(index: Path, component_dir: Path) -> list[Path]:
    """The shard files a `*.index.json` names, each confined to the component's folder."""
    weight_map = read_json_object(index, "sharded weights index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError(f"sharded weights index {index} has no weight_map of tensor names to files")
    return sorted({confined(component_dir, name, str(index)) for name in weight_map.values()})


def load_state_dict(
    path: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None, channels_last: bool = False
) -> dict:
    """Read one weights file into a state dict, enforcing the safetensors-only policy.
    With `dtype` (or `dtype(name)`, a dtype per tensor), floating tensors are cast one at a time as
    they are read; `channels_last` stores 4-D (convolution) weights in that layout in the same pass."""
    if not is_present(path, "weights file"):
        raise ModelError(f"weights file {path} is missing")
    if path.stat().st_size == 0:
        raise ModelError(f"weights file {path} is empty (0 bytes)")
    fmt = sniff_format(path)
    if fmt == SAFETENSORS:
        safetensors_header(path)  # bounded, before safetensors parses it (up to 100 MB) itself
        return _load_safetensors(path, device, dtype, channels_last)
    if fmt in (PICKLE_ZIP, PICKLE_RAW):
        if not allow_pickle:
            raise ModelError(
                f"{path} is a pickle file, which can run arbitrary code when loaded; "
                f"convert it to safetensors, or pass {PICKLE_FLAG} if you trust its source"
            )
        sd = _load_pickle(path, device)
        return {k: _cast(v, _dtype_of(dtype, k), channels_last) for k, v in sd.items()}
    raise ModelError(f"weights file {path} is neither safetensors nor a torch checkpoint (corrupt?)")


def _dtype_of(dtype, name: str):
    return dtype(name) if callable(dtype) else dtype


def _cast(t, dtype, channels_last: bool = False):
    """Cast a floating tensor to `dtype` (None: keep), 4-D ones to channels_last if asked."""
    import torch

    if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
        return t
    if channels_last and t.dim() == 4:
        return t.to(dtype=dtype or t.dtype, memory_format=torch.channels_last)
    return t.to(dtype) if dtype is not None else t


def _load_safetensors(path: Path, device: str, dtype=None, channels_last: bool = False) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        # Straight onto `device`; each tensor is cast before the next is read, so a bf16 load of
        # an fp32 file peaks at the bf16 size plus one tensor, not at the fp32 size.
        with safe_open(str(path), framework="pt", device=device) as f:
            return {k: _cast(f.get_tensor(k), _dtype_of(dtype, k), channels_last) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"weights file {path} is truncated or corrupt: {e}") from None


def parameter_count(component_dir: Path) -> int | None:
    """Number of weights of a component, read from its safetensors headers only (no tensor data);
    None when it is not stored as readable safetensors."""
    total = 0
    try:
        files = find_weight_files(component_dir)
    except ModelError:
        return None
    for f in files:
        if sniff_format(f) != SAFETENSORS:
            return None
        total += sum(math.prod(v["shape"]) for k, v in safetensors_header(f).items() if k != "__metadata__")
    return total


def safetensors_header(path: Path) -> dict:
    """The tensor table of a safetensors file ({name: {dtype, shape, data_offsets}}, with
    "__metadata__" if any), read without its tensor data: at most MAX_HEADER_BYTES, nested at most
    reading.MAX_DEPTH deep, and every tensor's offsets inside the file and its shape no larger than
    its bytes (so the counts it gives can bound what a config may allocate)."""
    with os.fdopen(open_regular(path, "weights file", ModelError), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if n > MAX_HEADER_BYTES:
            raise ModelError(
                f"weights file {path} declares a safetensors header of {size_text(n)}; at most "
                f"{size_text(MAX_HEADER_BYTES)} is read (real models' headers are well under 1 MiB)"
            )
        if not 0 <= n <= size - 8:
            raise ModelError(f"weights file {path} is truncated or corrupt: its safetensors header is cut off")
        text = f.read(n).decode("utf-8", errors="replace")
    header = parse_json(text, f"the safetensors header of {path}", ModelError)
    if not isinstance(header, dict):
        raise ModelError(f"weights file {path} has a damaged safetensors header: it is not a table")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        problem = None if name == "__metadata__" else _entry_problem(entry, data_bytes)
        if problem:
            raise ModelError(f"weights file {path} is truncated or corrupt: tensor {str(name)[:80]!r} {problem}")
    return header


def _entry_problem(entry, data_bytes: int) -> str | None:
    """What is wrong with one tensor's header entry, or None."""
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if isinstance(entry, dict) else (None, None)
    if not (isinstance(shape, list) and len(shape) <= 8 and all(whole(d) for d in shape)):
        return "has no shape of at most 8 whole numbers"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(whole(o) for o in offsets)):
        return "has no data_offsets [begin, end]"
    begin, end = offsets
    if not begin <= end <= data_bytes:
        return f"lies at bytes {begin:,} to {end:,} of data, but the file holds {data_bytes:,}"
    # Two values a byte at most (4-bit types); the exact size per dtype is safetensors' own check.
    if math.prod(shape) > 2 * (end - begin):
        return f"claims {math.prod(shape):,} values in {end - begin:,} bytes"
    return None


def stored_values(component_dir: Path) -> tuple[int | None, bool]:
    """(values, exact): the number of values in a component's weights, exact from safetensors
    headers, else bounded by the pickle files' bytes (exact False); (None, False) when the files are
    unreadable (their loader then says why)."""
    count = parameter_count(component_dir)
    if count is not None:
        return count, True
    try:
        files = find_weight_files(component_dir)
        if all(f.is_file() and sniff_format(f) in (PICKLE_RAW, PICKLE_ZIP) for f in files):
            return sum(f.stat().st_size for f in files), False
    except (ModelError, OSError):
        pass
    return None, False


def _load_pickle(path: Path, device: str) -> dict:
    import pickle
    import zipfile

    import torch

    try:
        # weights_only refuses any global outside tensors and plain containers,
        # so a __reduce__ payload is never executed.
        with warnings.catch_warnings():
            # Raw (non-torch.save) pickles trigger a protocol warning that would break our one-line errors.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # A file object, not the path: torch.load hands paths ending in .safetensors to safetensors.
            with open(path, "rb") as f:
                sd = torch.load(f, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message opens with advice to retry with weights_only=False, which is exactly
        # what we must not suggest; the useful part is the name of the blocked global.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"a reference to the Python object {found.group(1)}" if found else "content other than tensors"
        raise ModelError(
            f"refused to load {path}: it holds {what}, which could run code; "
            "only plain tensors are loaded from pickle files"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        if "TorchScript" in str(e):
            raise ModelError(
                f"{path} is a TorchScript archive, not a state dict; latentdiff loads only plain "
                "tensors: save the model's state_dict (to safetensors) instead"
            ) from None
        # Never pass on torch's advice to retry with weights_only=False (it would run the file's code).
        why = (
            ""
            if "weights_only" in str(e)
            else f": {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        )
        raise ModelError(f"weights file {path} is truncated or corrupt{why}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"{path} does not hold a state dict")
    return sd


def load_component_state(
    component_dir: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None, channels_last: bool = False
) -> dict:
    """Merge the state dicts of all shards of one component."""
    sd: dict = {}
    for f in find_weight_files(component_dir):
        sd.update(load_state_dict(f, allow_pickle, device, dtype, channels_last))
    return sd


def assign(module, component_dir: Path, allow_pickle=False, device="cpu", dtype=None, channels_last=False):
    """Fill a meta-initialised module with the weights on disk (floating tensors cast to `dtype`,
    conv weights laid out channels_last, as they are read); refuse any mismatch."""
    with allocation_errors(f"loading the weights in {component_dir}", "free some memory, or load in fp16/bf16"):
        device = "cpu" if device == "mps" else device
        sd = load_component_state(component_dir, allow_pickle, device, dtype, channels_last)
    return fill(module, sd, component_dir)


def _untied(module, missing: list[str]) -> list[str]:
    """The missing keys that tying shared weights (T5's embeddings, stored once) does not fill."""
    if missing and hasattr(module, "tie_weights"):
        module.tie_weights()
        return [k for k in missing if module.get_parameter(k).is_meta]
    return missing


def fill(module, sd: dict, where):
    """Assign the tensors of `sd` to `module`; a missing, extra or misshapen one is one error naming `where`."""
    sd = checkpoint_names(module, sd)
    try:
        result = module.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(f"weights in {where} do not fit its config: {first[-1].strip()}") from None
    unexpected = [k for k in result.unexpected_keys if k not in _IGNORABLE_UNEXPECTED]
    missing = _untied(module, result.missing_keys)
    if missing or unexpected:
        keys = (missing or unexpected)[:3]
        kind = "lack" if missing else "have unexpected"
        raise ModelError(f"weights in {where} {kind} tensors such as {', '.join(keys)}")
    return module
