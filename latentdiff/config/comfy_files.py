"""The files a ComfyUI graph loads by name (images/comfy_graph.py): its checkpoint (and a refiner's),
VAE and LoRAs, found from the flags of `generate --from`.

ComfyUI names them relative to its models folder (models/checkpoints, models/vae, models/loras).
`--model` is the checkpoint itself (any model latentdiff loads), or a folder holding the named
checkpoint: ComfyUI's models/checkpoints folder, or its models folder (then its vae/ and loras/
folders are where the VAE and LoRAs are looked for). `--vae` and `--lora-dir` name those files or
folders otherwise. A name the folders do not hold is one error naming it; a name that leaves its
folder (`../x`) is refused, as ComfyUI refuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

from latentdiff.errors import UsageError


def _inside(folder: Path, name: str) -> Path | None:
    """The file (or model folder) `name` (ComfyUI's, '/' or '\\' separated) inside `folder`, if it is there."""
    base = folder.resolve()
    path = (base / name.replace("\\", "/")).resolve()
    if os.path.commonpath([base, path]) != str(base) or not path.exists():
        return None
    return path


def _checkpoint(name: str, model: str | None, where: str) -> tuple[str, Path | None, list[str]]:
    """(the model to load, ComfyUI's models folder where known, notes)."""
    if model is None:
        raise UsageError(
            f"{where} loads checkpoint {name!r}: pass --model with that file, or with the folder holding "
            "it (ComfyUI's models/checkpoints or models folder)"
        )
    folder = Path(model).expanduser()
    if not folder.is_dir() or (folder / "model_index.json").exists():
        same = Path(model).name == Path(name.replace("\\", "/")).name
        return model, None, [] if same else [f"the graph's checkpoint {name!r}: using --model {model}"]
    found, root = _held(folder, name)
    if found is None:
        raise UsageError(
            f"{where} loads checkpoint {name!r}, which --model {model} does not hold (nor its checkpoints/)"
        )
    return found, root, []


def _held(folder: Path, name: str) -> tuple[str | None, Path | None]:
    """(checkpoint `name` inside `folder` or its checkpoints/ folder, ComfyUI's models folder where known)."""
    for base in (folder, folder / "checkpoints"):
        found = _inside(base, name)
        if found is not None:
            return str(found), base.parent if base.name == "checkpoints" else None
    return None, None


def _refiner(name: str, flags: dict, where: str) -> str:
    """The refiner checkpoint the graph's second CheckpointLoaderSimple names: --refiner where given,
    else inside the folder --model names."""
    if flags.get("refiner") is not None:
        return flags["refiner"]
    folder = Path(flags.get("model") or ".").expanduser()
    found = _held(folder, name)[0] if flags.get("model") and folder.is_dir() else None
    if found is None:
        raise UsageError(
            f"{where} loads refiner checkpoint {name!r}: pass --refiner with it, or --model with the folder "
            "holding both checkpoints (ComfyUI's models/checkpoints or models folder)"
        )
    return found


def _named(kind: str, name: str, flag: str, given: str | None, root: Path | None, where: str) -> str:
    """A VAE or LoRA file the graph names: inside the folder `given` by `flag` (or the file itself,
    for --vae), else inside ComfyUI's models/<kind> folder `root`."""
    if given is not None and kind == "vae" and not Path(given).expanduser().is_dir():
        return given
    for folder in [Path(given).expanduser()] if given is not None else [root / kind] if root else []:
        found = _inside(folder, name)
        if found is None:
            raise UsageError(f"{where} loads {kind} file {name!r}, which {folder} does not hold")
        return str(found)
    raise UsageError(f"{where} loads {kind} file {name!r}: pass {flag} with the folder holding it")


def resolve(params: dict, flags: dict, where: str) -> dict:
    """`params` (images/comfy_graph.params_from_comfy) with the files of its "comfy" entry found
    from `flags` ("model", "vae", "lora_dir", "loras" where given) as "model", "vae" and "loras";
    what the flags replace is left as they say. "notes" says what was substituted."""
    names = params["comfy"]
    out = {k: v for k, v in params.items() if k != "comfy"}
    out["model"], root, notes = _checkpoint(names["checkpoint"], flags.get("model"), where)
    if names.get("refiner") is not None:
        out["refiner"] = _refiner(names["refiner"], flags, where)
    if names["vae"] is not None:
        out["vae"] = _named("vae", names["vae"], "--vae", flags.get("vae"), root, where)
    if not flags.get("loras"):
        out["loras"] = [
            {**x, "path": _named("loras", x["name"], "--lora-dir", flags.get("lora_dir"), root, where)}
            for x in names["loras"]
        ]
    if names.get("run") is not None:
        out["comfy_graph"] = _pictures(names["run"], flags, where)
    out["notes"] = params.get("notes", []) + notes
    return out


def _pictures(run: dict, flags: dict, where: str) -> dict:
    """The graph's run with the pictures it loads found: --init-image (and --mask, white = repaint, read
    as its red channel) where given, else the file of that name next to the PNG (`flags["from_image"]`)."""
    beside = Path(flags.get("from_image") or ".").expanduser().parent

    def found(name: str, flag: str, given) -> str:
        if given is not None:
            return str(given)
        path = _inside(beside, name)
        if path is None or not path.is_file():
            raise UsageError(f"{where} loads picture {name!r}: pass {flag} with it, or put it beside the PNG")
        return str(path)

    out = {**run, "image": found(run["image"], "--init-image", flags.get("image"))} if run.get("image") else dict(run)
    if run.get("mask"):  # the picture's own alpha follows the picture given
        name, channel = run["mask"]
        given, same = flags.get("mask"), run.get("image") == name
        out["mask"] = (
            [given, "R"] if given is not None else [out["image"] if same else found(name, "--mask", None), channel]
        )
    return out


def from_flags(params: dict, flags: dict, image_flags: dict, png: str) -> tuple[dict, dict]:
    """(`params` with its files found, the image flags left for an img2img start) for `generate --from
    png`; `flags` take the model and VAE found. A graph's pictures are its own start, not an img2img one."""
    params = resolve(params, {**flags, **image_flags, "from_image": png}, f"the ComfyUI graph of {png}")
    flags.update({k: params[k] for k in ("model", "vae", "refiner") if k in flags and k in params})
    if params.get("comfy_graph"):
        image_flags = {k: v for k, v in image_flags.items() if k not in ("image", "mask")}
    return params, image_flags
