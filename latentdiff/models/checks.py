"""A model folder is user data: check every config before a module is built from it.

- configs must be JSON objects (diffusers treats anything else as a hub id and answers with
  "check your internet connection");
- counts that make Python objects (layers, blocks, heads, list lengths) are bounded;
- a module is first built on the meta device (nothing allocated) and must not describe more
  weights than the folder holds, so a config cannot make us allocate more than the files' size;
- scheduler configs must name a diffusers scheduler and a step count it can work with;
- every file a folder names (sharded index files) must lie inside it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path, PurePosixPath

from latentdiff.errors import ModelError

MAX_COUNT = 256  # layers, blocks, heads per config entry
MAX_LIST = 64
MAX_INT = 2**40
MAX_TRAIN_TIMESTEPS = 100_000
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_COUNT_WORDS = ("layers", "heads")


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in `path`, or one ModelError saying what is wrong with the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{what} config {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelError(f"{what} config {path} is not valid JSON: {e}") from None
    except OSError as e:
        raise ModelError(f"{what} config {path} cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what} config {path} must hold a JSON object, not {type(data).__name__}")
    return data


def check_config_numbers(config: dict, path: Path) -> None:
    """Bound what would make objects or overflow: counts, list lengths, any integer."""
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > MAX_LIST:
            raise ModelError(f"{path}: {key} lists {len(value)} entries; at most {MAX_LIST} are supported")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ModelError(f"{path}: {key} is {v}, not a finite number")
            limit = MAX_COUNT if any(w in key for w in _COUNT_WORDS) else MAX_INT
            if abs(v) > limit:
                raise ModelError(f"{path}: {key} = {v} is out of range (at most {limit:,})")


def guarded(fn, path: Path):
    """`fn()`, with any error a library raises over a bad config turned into one ModelError."""
    try:
        return fn()
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - libraries raise any type for a bad config; all mean that
        raise ModelError(f"{path} is not a usable config: {first_line(e)}") from None


def build_on_meta(cls, config, path: Path):
    """Build `cls` from `config` with every tensor on the meta device (nothing is allocated)."""
    import torch

    def build():
        # A bad config's warnings (zero-element tensors, deprecated keys) would break our one line.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return construct(cls, config)

    return guarded(build, path)


def construct(cls, config):
    return cls(config) if not hasattr(cls, "from_config") else cls.from_config(config)


def check_size_against_weights(module, stored: int | None, path: Path, weights_dir: Path) -> None:
    """The module a config describes may not need more values than the folder's weights hold."""
    if stored is None:
        return
    wanted = sum(p.numel() for p in module.parameters())
    # Buffers a checkpoint need not store (CLIP's position_ids) are small next to the weights.
    wanted_buffers = sum(b.numel() for b in module.buffers())
    if wanted > stored or wanted_buffers > max(stored, 1 << 20):
        raise ModelError(f"{path} describes a model of {wanted + wanted_buffers:,} values, but the weights in {weights_dir} "
                         f"hold {stored:,}; the config does not belong to these weights")


def stored_values(component_dir: Path) -> int | None:
    """Values in a component's weights: from safetensors headers, else bounded by the pickle files'
    bytes; None when the files are unreadable (their loader then says why)."""
    from latentdiff.models.weights import PICKLE_RAW, PICKLE_ZIP, find_weight_files, parameter_count, sniff_format

    count = parameter_count(component_dir)
    if count is not None:
        return count
    try:
        files = find_weight_files(component_dir)
        if all(f.is_file() and sniff_format(f) in (PICKLE_RAW, PICKLE_ZIP) for f in files):
            return sum(f.stat().st_size for f in files)
    except (ModelError, OSError):
        pass
    return None


def check_scheduler_config(config: dict, path: Path) -> dict:
    """A scheduler config we can build and step: a diffusers scheduler class, a sane number of
    training timesteps and a known prediction type. Returns it unchanged."""
    import diffusers

    name = config.get("_class_name", "PNDMScheduler")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ModelError(f"{path}: _class_name {name!r} is not a diffusers scheduler")
    n = config.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TRAIN_TIMESTEPS:
        raise ModelError(f"{path}: num_train_timesteps must be a whole number from 1 to {MAX_TRAIN_TIMESTEPS:,}, "
                         f"got {n!r}")
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise ModelError(f"{path}: prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
                         f"got {config.get('prediction_type')!r}")
    check_config_numbers(config, path)
    check_scheduler_steps(config, None, 1, path)
    return config


def check_scheduler_steps(config: dict, name: str | None, steps: int, path) -> None:
    """Build the scheduler (the model's own, or method `name` on its config) and set `steps`
    timesteps once, so a config it cannot work with fails here, in one line, before any work."""
    from latentdiff.sampling.loop import make_scheduler

    guarded(lambda: make_scheduler(config, name).set_timesteps(steps), path)


def check_defaults(defaults: dict, path: Path) -> dict:
    """latentdiff.json: the recommended steps/guidance/CPU dtype, checked like the flags."""
    import latentdiff.config.params as params

    label = params.recorded_label(str(path))
    if defaults.get("steps") is not None:
        params.steps(label, defaults["steps"])
    if defaults.get("guidance") is not None:
        params.guidance(label, defaults["guidance"])
    if defaults.get("noise_level") is not None:
        params.whole(label, "noise_level", defaults["noise_level"], 0, 10_000)
    if defaults.get("cpu_dtype") is not None:
        params.choice(label, "cpu_dtype", defaults["cpu_dtype"], ("fp32", "fp16", "bf16"))
    for key in ("base_model", "lora", "upscaler"):
        if defaults.get(key) is not None:
            params.path_text(label, key, defaults[key])
    return defaults


def confined(folder: Path, name, what: str) -> Path:
    """`folder / name` for a file name read from a model file; refuse names that leave the folder
    (absolute, drive letters, `..`) and links whose target is outside the model or its hub cache."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ModelError(f"{what} names a file {name!r}, which is not a file name")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or ":" in name:
        raise ModelError(f"{what} names {name!r}, outside its folder {folder}; refusing to open it")
    path = folder / pure
    if path.is_symlink() and not _inside(path.resolve(), _allowed_root(folder)):
        raise ModelError(f"{what} names {name!r}, a link that leads outside the model; refusing to open it")
    return path


def _allowed_root(folder: Path) -> Path:
    """The model's own folder, or for a Hugging Face cache snapshot its repository folder (whose
    blobs/ the snapshot's links point into)."""
    resolved = folder.resolve()
    for parent in resolved.parents:
        if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
            return parent.parent
    return resolved


def _inside(path: Path, root: Path) -> bool:
    return os.path.commonpath([str(path), str(root)]) == str(root)


def first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
