"""ControlNet and T2I-Adapter units on the server, for both APIs.

A unit names its model by name, never by path: an entry of the server's --controlnet-dir (a
diffusers folder, or a single file as the A1111 extension keeps them), listed and matched as the
extension prints it, `control_v11p_sd15_canny [d14c016b]` (the name, and A1111's short hash of
the weights), by name and/or hash; the folder confines it as --models-dir confines models
(models.inside). A unit's values are checked by the rules `generate --control` uses
(config/control_flags.checked) and its picture is held as the file sent (inputs.ControlFile)
until the worker decodes it; the pipeline loads the model from the path (workflows/control.py)."""

from __future__ import annotations

import re
from pathlib import Path

from latentdiff.config.control_flags import MODULES, checked, module, resolution, thresholds
from latentdiff.errors import ModelError, UsageError
from latentdiff.server.inputs import ControlFile, picture_bytes, rgb_picture
from latentdiff.server.models import inside, is_name

# The single files a control model comes in (the A1111 extension's and ComfyUI's folders).
CONTROL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
MAX_LISTED = 1000  # entries of --controlnet-dir looked at (a folder of thousands is no model folder)
TITLE = re.compile(r"(.*?)(?: \[([0-9a-fA-F]{8,10})\])?")
NO_MODEL = ("", "none", "None")


class ControlModels:
    """The control models of --controlnet-dir (`root`, resolved; None: the server has none)."""

    kind, flag = "control model", "--controlnet-dir"

    def __init__(self, root: Path | None):
        self.root = root

    def entries(self) -> list[dict]:
        """Every model a unit may name: {"title", "name", "hash", "path"}, by name."""
        if self.root is None:
            return []
        out = []
        for entry in self.listed():
            path = inside(self.root, entry) if is_name(entry.name) else None
            short = self.short_hash(path) if path is not None else None
            if short is not None:
                out.append({"title": f"{path.stem} [{short}]", "name": path.stem, "hash": short, "path": path})
        return out

    def listed(self) -> list[Path]:
        """The entries of the folder looked at (each checked to lie inside it by `entries`)."""
        return sorted(self.root.iterdir())[:MAX_LISTED]

    def short_hash(self, path: Path) -> str | None:
        return _short_hash(path)

    def titles(self) -> list[str]:
        return [e["title"] for e in self.entries()]

    def resolve(self, ref, what: str) -> tuple[str, Path]:
        """(title, path) of the model a unit names: its title, its name (the file name, with or
        without the extension; any case), or the hash in brackets alone when no name matches."""
        if not isinstance(ref, str) or ref in NO_MODEL:
            raise UsageError(f"{what}: give {_a(self.kind)} (GET /controlnet/model_list lists them), got {_shown(ref)}")
        if self.root is None:
            raise UsageError(f"{what}: this server has no {self.kind}s (start it with {self.flag} DIR)")
        name, short = TITLE.fullmatch(ref.strip()).groups()
        entries = self.entries()
        named = [e for e in entries if name.lower() in (e["name"].lower(), e["path"].name.lower())]
        if len(named) > 1:
            named = [e for e in named if short and e["hash"] == short.lower()] or named
        if not named and short:
            named = [e for e in entries if e["hash"] == short.lower()]
        if len(named) != 1:
            how = "names more than one" if named else "is not one of the"
            raise UsageError(
                f"{what}: {_shown(ref)} {how} {self.kind}s of {self.flag}; GET /controlnet/model_list lists them"
            )
        return named[0]["title"], named[0]["path"]


def _short_hash(path: Path) -> str | None:
    """A1111's short hash of a control model (a folder: of its weight file), None for an entry that
    is no control model (a folder without config.json or weights, a file of another kind)."""
    # Imported with the first listing: fingerprint reads weights' names through models.weights (numpy, safetensors).
    from latentdiff.models.fingerprint import a1111_short_hash
    from latentdiff.models.weights import find_weight_files

    try:
        if path.is_file():
            return a1111_short_hash(path) if path.suffix.lower() in CONTROL_SUFFIXES else None
        if path.is_dir() and (path / "config.json").is_file():
            return a1111_short_hash(find_weight_files(path)[0])
    except (OSError, ModelError):
        return None
    return None


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiouAEIOU" else "a ") + kind


def _shown(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def control_file(models: ControlModels, unit: dict, image: str, what: str) -> tuple[dict, ControlFile]:
    """(what the job shows, the ControlFile it holds) of one unit: `unit` holds our settings
    (model as a request names it, weight, start, end, resize, module, processor_res, threshold_a,
    threshold_b; None: the default), `image` its base64 picture."""
    title, path = models.resolve(unit.get("model"), f"{what}.model")
    data = picture_bytes(image, f"{what}.image")
    rec = checked({**unit, "image": None, "model": str(path)}, what)
    shown = {k: rec[k] for k in ("weight", "start", "end", "resize", "module", "processor_res")}
    shown.update(model=title, threshold_a=rec["threshold_a"], threshold_b=rec["threshold_b"])
    return shown, ControlFile(data, rec, what)


def v1_units(models: ControlModels, units) -> tuple[list[dict], tuple[ControlFile, ...]]:
    """The `controls` of a /v1 request (schema.ControlUnit) as (shown, files)."""
    pairs = [
        control_file(models, u.model_dump(exclude={"image"}), u.image, f"controls[{k}]") for k, u in enumerate(units)
    ]
    return [s for s, _ in pairs], tuple(f for _, f in pairs)


def module_list(alias_names: bool = False) -> dict:
    """/controlnet/module_list: the preprocessors (their A1111 names, or labels with alias_names)
    and each one's sliders as the extension describes them."""
    names = [(m.label or m.name) if alias_names else m.name for m in MODULES.values()]
    detail = {}
    for shown, m in zip(names, MODULES.values()):
        sliders = [{"name": "Resolution", "value": 512, "min": 64, "max": 2048}] if m.res and not m.fixed else []
        for p in (m.a, m.b):
            if p is not None:
                sliders.append({"name": p.label, "value": p.default, "min": p.lo, "max": p.hi})
        detail[shown] = {"model_free": True, "sliders": sliders}
    return {"module_list": names, "module_detail": detail}


def detect(module_name: str, images: list[str], res, a, b) -> list[str]:
    """/controlnet/detect: each base64 picture preprocessed (as `latentdiff detect`), base64 PNGs."""
    import base64
    import io

    # Imported with the first detection: preprocess imports numpy and OpenCV, which the server does not load before.
    from latentdiff.images.preprocess import preprocess

    if not images:
        raise UsageError("controlnet_input_images: give at least one base64 image")
    m = module(module_name, "controlnet_module")
    res = resolution(m, res, "controlnet_processor_res")
    a, b = thresholds(m, a, b, "controlnet_threshold_a/b:")
    out = []
    for k, text in enumerate(images):
        what = f"controlnet_input_images[{k}]"
        picture = rgb_picture(picture_bytes(text, what), what)
        buf = io.BytesIO()
        preprocess(picture, m.name, res, a, b, 0).save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out
