"""The hires fix's upscaler models on the A1111 API, as A1111 keeps and names them: the model files of
the models folder's ESRGAN/, RealESRGAN/, DAT/, SwinIR/ and HAT/ (A1111's folders; also ComfyUI's
upscale_models/), each named as A1111 names it: "R-ESRGAN 4x+" for RealESRGAN_x4plus.pth and A1111's
other downloads (config/upscalers.py), any other file by its stem. `hr_upscaler` takes those names
(GET /sdapi/v1/upscalers lists them); the file runs through formats/sr_model.py (spandrel) on the hires
fix's pixel path. Names never become paths: only a listed file resolves, a link only when it leads
inside its folder. The server loads no pickle: a .pth/.pt file is listed (A1111 clients see what A1111
would offer) and refused by name when asked for, with the way out (a .safetensors copy)."""

from __future__ import annotations

from pathlib import Path

from latentdiff.config.upscalers import A1111_MODEL_NAMES, model_label
from latentdiff.errors import UsageError

FOLDERS = ("ESRGAN", "RealESRGAN", "DAT", "SwinIR", "HAT", "upscale_models")
SUFFIXES = (".pth", ".pt", ".safetensors")
DEFAULT_SCALE = {"ESRGAN": 4}  # A1111's ESRGAN upscaler says 4 for every file
MAX_FILES = 1000


def models(cfg) -> list[tuple[str, Path, str, float | None]]:
    """(A1111's name, file, its folder's name, scale or None) of every upscaler model; the first of a name wins."""
    out, seen = [], set()
    for kind in FOLDERS:
        folder = cfg.models_subfolder(kind)
        for path in _files(folder) if folder is not None else []:
            name = model_label(path.name)
            if name in seen:
                continue
            seen.add(name)
            out.append((name, path, kind, A1111_MODEL_NAMES.get(path.stem, (None, DEFAULT_SCALE.get(kind)))[1]))
    return out


def _files(folder: Path) -> list[Path]:
    """The model files in `folder` and below (at most MAX_FILES), links only where they stay inside it."""
    found = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in SUFFIXES and p.is_file() and p.resolve().is_relative_to(folder):
            found.append(p)
        if len(found) >= MAX_FILES:
            break
    return found


def listing(cfg) -> list[dict]:
    """GET /sdapi/v1/upscalers' rows for the model files (A1111's UpscalerItem)."""
    return [
        {"name": name, "model_name": kind, "model_path": str(path), "model_url": None, "scale": scale}
        for name, path, kind, scale in models(cfg)
    ]


def resolve(cfg, name: str) -> str | None:
    """The file `hr_upscaler` names (A1111's name, or the file's name), None where no model has it;
    a 400 for a pickle file."""
    for label, path, _, _ in models(cfg):
        if name in (label, path.name, path.stem):
            if path.suffix.lower() != ".safetensors":
                raise UsageError(
                    f"hr_upscaler {name!r} is {path.name}, a pickle file, which latentdiff's server does not load "
                    "(it can run code); put a .safetensors copy of it in the folder instead"
                )
            return str(path)
    return None
