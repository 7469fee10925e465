"""`latentdiff convert SRC DST`: a diffusers folder to one single-file checkpoint in the
original (A1111-loadable) layout, or such a file back to a diffusers folder."""

from __future__ import annotations

from pathlib import Path

import latentdiff.models.assemble as assemble
import latentdiff.models.hub as hub
from latentdiff.errors import ModelError, UsageError
from latentdiff.formats.ldm_keys import layout_problem
from latentdiff.formats.lora_merge import lora_base
from latentdiff.formats.preflight import shown_path
from latentdiff.formats.single_file import load_single_file, save_single_file
from latentdiff.formats.transformer_file import load_transformer_file, save_transformer_file, transformer_family
from latentdiff.models.components import save_components
from latentdiff.models.configs import check_model_dir, denoiser_folder, read_index
from latentdiff.models.files import read_json_object
from latentdiff.runtime.device import DTYPES
from latentdiff.runtime.staging import staged_file, staged_folder

USE_FOLDER = "use the folder as it is (latentdiff --model, diffusers' from_pretrained)"


def convert(src, dst, allow_pickle: bool = False, dtype: str | None = None, components=None) -> Path:
    """SRC (a folder; a single file; a Flux.1/SD 3 transformer file with the folder `components`)
    written as DST (a single file; a folder); a Flux.1/SD 3 folder becomes its transformer alone in
    the original layout (the file its users share), the rest staying in the folder."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if dst.exists():
        raise UsageError(f"{dst} already exists; convert never overwrites, choose another destination")
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
    if src.is_dir():
        if dst.suffix != ".safetensors":
            raise UsageError(f"a folder converts to one .safetensors file; {dst} should end in .safetensors")
        _refuse_lora(src)
        check_model_dir(src)
        transformer = denoiser_folder(read_index(src), src) == "transformer"
        if not transformer:
            _check_layout(src)  # from its config, before any weights are read
        comps = assemble.load_components(src, allow_pickle)
        save = save_single_file
        if transformer:  # the folder's pipeline class with it: Flux.1 Kontext has dev's weights
            save = lambda c, f, d: save_transformer_file(c.unet, f, d, c.index.get("_class_name"))  # noqa: E731
        try:
            with staged_file(dst, "the checkpoint") as tmp:  # a full disk leaves no half file
                save(comps, tmp, DTYPES.get(dtype))
            return dst
        except ModelError as e:
            raise ModelError(f"{src} has no single-file form: {e}; {USE_FOLDER}") from None
    if not src.is_file():
        raise UsageError(f"{src}: no such file or folder")
    if transformer_family(src) is not None:
        comps = load_transformer_file(src, components, allow_pickle)
    else:
        comps = load_single_file(src, allow_pickle)
    if dtype is not None:
        for m in (comps.unet, comps.vae, *comps.text_encoders()):
            m.to(DTYPES[dtype])
    with staged_folder(dst, "the model") as tmp:  # a full disk leaves no half folder
        save_components(comps, tmp, comps.scheduler_config.get("_class_name", "PNDMScheduler"))
    return dst


def _check_layout(folder: Path) -> None:
    problem = _layout_problem(folder)
    if problem:
        raise ModelError(
            f"{folder} has no single-file form: {problem}, which the single-file layout A1111 and "
            f"ComfyUI load has no place for; {USE_FOLDER}"
        )


def _layout_problem(folder: Path) -> str | None:
    return layout_problem(read_json_object(folder / "unet" / "config.json", "unet"))


def _refuse_lora(folder: Path) -> None:
    """A LoRA folder is no model; say so, and whether its base can reach A1111 at all."""
    base = lora_base(folder)
    if base is None:
        return
    why = ""
    if base == "default" or Path(base).is_dir():
        base_dir = hub.resolve(None if base == "default" else base)
        problem = _layout_problem(base_dir)
        if problem:
            why = f" on its base {shown_path(base_dir)}, which has no A1111/ComfyUI form either ({problem})"
    raise UsageError(f"{folder} is a LoRA, not a model (convert writes whole models); use it with --lora{why}")
