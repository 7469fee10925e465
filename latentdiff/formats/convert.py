"""`latentdiff convert SRC DST`: a diffusers folder to one single-file checkpoint in the
original (A1111-loadable) layout, or such a file back to a diffusers folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def convert(src, dst, allow_pickle: bool = False, dtype: str | None = None) -> Path:
    from .. import hub
    from ..models import load_components, save_components
    from ..runtime import DTYPES
    from .single_file import load_single_file, save_single_file

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if dst.exists():
        raise UsageError(f"{dst} already exists; convert never overwrites, choose another destination")
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
    if src.is_dir():
        if dst.suffix != ".safetensors":
            raise UsageError(f"a folder converts to one .safetensors file; {dst} should end in .safetensors")
        comps = load_components(hub.check_model_dir(src), allow_pickle)
        return save_single_file(comps, dst, DTYPES.get(dtype))
    if not src.is_file():
        raise UsageError(f"{src}: no such file or folder")
    comps = load_single_file(src, allow_pickle)
    if dtype is not None:
        for m in (comps.unet, comps.vae, *comps.text_encoders()):
            m.to(DTYPES[dtype])
    save_components(comps, dst, comps.scheduler_config.get("_class_name", "PNDMScheduler"))
    return dst
