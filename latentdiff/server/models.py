"""Loaded pipelines by name: the default model plus folders of `--models-dir`, kept in an LRU whose
weights stay under a memory budget. Only the job worker loads, so loading needs no lock; listing
and the LRU bookkeeping share one."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

from latentdiff.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelPool:
    def __init__(self, default: str | None, models_dir: str | None, load, budget_bytes: int):
        """`load(ref) -> Pipeline`; `default` is a model reference (None: the shipped model)."""
        self.default_ref = default
        self.default_name = Path(default).name if default else "default"
        self.models_dir = Path(models_dir).resolve() if models_dir else None
        self._load, self.budget = load, budget_bytes
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, name: str | None) -> tuple[str, str | None]:
        """(name, reference) of a model a request names; refuses names that leave --models-dir."""
        if not name or name == self.default_name:
            return self.default_name, self.default_ref
        if self.models_dir is None:
            raise UsageError(f"unknown model {name!r}: this server has only {self.default_name!r} (no --models-dir)")
        if not is_name(name):
            raise UsageError(f"model name {name!r} is not a folder name inside --models-dir")
        entry = self.models_dir / name
        path = self._folder(entry)
        if path is None and entry.is_symlink() and entry.resolve().is_dir():
            raise UsageError(
                f"model {name!r} is a link leading outside --models-dir, which the server does not "
                "follow; move the model in, or point --models-dir at the folder it lives in"
            )
        if path is None:
            raise UsageError(f"unknown model {name!r}; GET /v1/models lists the available ones")
        return name, str(path)

    def _folder(self, entry: Path) -> Path | None:
        """The folder a --models-dir entry stands for, or None: not a folder, or a link whose target
        lies outside --models-dir. Listing and requests both go by this one rule."""
        real = inside(self.models_dir, entry)
        return real if real is not None and real.is_dir() else None

    def links_outside(self) -> list[str]:
        """Entries of --models-dir that are links leading out of it (skipped; said once at start)."""
        if self.models_dir is None:
            return []
        return sorted(
            p.name
            for p in self.models_dir.iterdir()
            if p.is_symlink() and p.resolve().is_dir() and self._folder(p) is None
        )

    def get(self, name: str | None):
        """The pipeline for `name`, loading it (and evicting least recently used ones) if needed."""
        name, ref = self.resolve(name)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        pipe = self._load(ref)
        with self._lock:
            self._loaded[name] = pipe
            self._evict(keep=name)
        return pipe

    def peek(self, name: str):
        """The loaded pipeline of a resolved name, or None (never loads)."""
        with self._lock:
            return self._loaded.get(name)

    def _evict(self, keep: str) -> None:
        while len(self._loaded) > 1 and sum(map(weight_bytes, self._loaded.values())) > self.budget:
            oldest = next(k for k in self._loaded if k != keep)
            del self._loaded[oldest]
        _free_cached_memory()

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def available(self) -> list[dict]:
        """Every model a request may name: the default, then --models-dir folders that hold a model
        (model_index.json) or a LoRA written by `finetune` (latentdiff.json naming a `lora`); a link
        counts when it leads to a folder inside --models-dir (`_folder`)."""
        loaded = set(self.loaded())
        out = [{"name": self.default_name, "kind": "model", "default": True, "loaded": self.default_name in loaded}]
        if self.models_dir is not None:
            for entry in sorted(p for p in self.models_dir.iterdir() if _NAME.match(p.name)):
                d = self._folder(entry)
                kind = (
                    None
                    if d is None
                    else "model"
                    if (d / "model_index.json").is_file()
                    else ("lora" if _is_lora(d) else None)
                )
                if kind and entry.name != self.default_name:
                    out.append({"name": entry.name, "kind": kind, "default": False, "loaded": entry.name in loaded})
        return out


def inside(root: Path, entry: Path) -> Path | None:
    """The real path of `entry`, an entry of the folder `root` (resolved), when it lies inside
    `root` (a link leading out of it: None). The one rule confining what a request may name to a
    folder of the server's (--models-dir, --controlnet-dir)."""
    real = entry.resolve()
    return None if real == root or not real.is_relative_to(root) else real


def is_name(name) -> bool:
    """Whether a request's `name` can only be an entry of a folder: a plain file or folder name."""
    return isinstance(name, str) and bool(_NAME.match(name)) and ".." not in name


def _is_lora(d: Path) -> bool:
    import json

    try:
        return bool(json.loads((d / "latentdiff.json").read_text()).get("lora"))
    except (OSError, ValueError, AttributeError):
        return False


def weight_bytes(pipe) -> int:
    c = pipe.components
    # every text encoder: an SDXL refiner has only the second, SDXL and Flux two
    modules = (c.unet, c.vae, *c.text_encoders())
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def _free_cached_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
