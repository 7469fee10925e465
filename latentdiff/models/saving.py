"""`Pipeline.save_pretrained`: the diffusers layout written whole or not at all, never over the
files the model was loaded from."""

from __future__ import annotations

from pathlib import Path

import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.models.components import Components, save_components
from latentdiff.models.configs import TEXT_PARTS
from latentdiff.models.unclip_parts import FOLDERS as UNCLIP_FOLDERS
from latentdiff.runtime.device import DTYPES, cast_while
from latentdiff.runtime.staging import staged_folder

# The folders save_components writes (each replaces the one of that name in the destination).
WRITTEN = (
    "unet",
    "vae",
    "scheduler",
    "low_res_scheduler",
    *(name for pair in TEXT_PARTS for name in pair),
    *UNCLIP_FOLDERS,  # image_noising_scheduler among them: a pixel SR stage's too
)


def save_pretrained(c: Components, out, dtype, loaded_from) -> Path:
    """Write `c` into the folder `out` (made if missing; other files in it stay), weights in
    `dtype` (fp32, fp16, bf16; None: as they are). `loaded_from`: the paths the model came from
    (folders among them are refused as destinations). A full disk leaves `out` as it was."""
    out = Path(params.path_text(params.api_label, "out", out)).expanduser()
    if dtype is not None:
        dtype = params.choice(params.api_label, "dtype", dtype, ("fp32", "fp16", "bf16"))
    check_destination(out, loaded_from)
    with cast_while((c.unet, c.vae, *c.text_encoders()), DTYPES.get(dtype)), staged_folder(out, "the model") as tmp:
        save_components(c, tmp, c.scheduler_config.get("_class_name", "PNDMScheduler"))
    return out


def check_destination(out: Path, loaded_from) -> None:
    """Refuse a destination that is a file, or whose writing would replace files the model was
    loaded from: the model's folder itself, a folder inside it, a link to either (real paths are
    compared), or a folder whose component folders (unet/, vae/, ...) hold a source."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"save_pretrained: {out} is a file, not a folder; choose a folder to write the model into")
    real = out.resolve()
    for src in loaded_from:
        if src is None or not Path(src).is_dir():  # a single file is never written over; a hub id is not local
            continue
        source = Path(src).resolve()
        inside_out = source.is_relative_to(real) and source != real
        if (
            real == source
            or real.is_relative_to(source)
            or (inside_out and source.relative_to(real).parts[0] in WRITTEN)
        ):
            raise UsageError(
                f"save_pretrained: {out} is or holds {source}, which this model was loaded from; writing there would "
                "replace the files it is read from; choose another folder"
            )
