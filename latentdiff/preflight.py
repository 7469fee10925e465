"""What a model's small files say before its weights load, and what a request can be checked
against with them: the VAE's scale factor, the image size the model was trained at, its training
timesteps and its weights' size. Also the one-line notes a CLI prints while it loads and where a
request asks for more than the model can draw.

A request that cannot work fails here in one line, before the 5-15 s of loading (issue 22).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import params

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".gguf")
LOADED_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
# A request over this multiple of the trained image area gets a note: models repeat and tile their
# subjects there (SD 1.5 at 768x768, the 64 px emoji model at 128 px).
AREA_NOTE_RATIO = 2.0


@dataclass(frozen=True)
class ModelFacts:
    path: Path  # the model folder the weights come from
    factor: int  # pixels per latent pixel (the VAE's downscale)
    native: int  # side in pixels of the images the model was trained at: UNet sample_size x factor
    train_timesteps: int | None
    guidance: float | None  # the model's recommended guidance (latentdiff.json)
    unet: dict
    vae: dict


def model_facts(model, allow_pickle: bool = False) -> ModelFacts | None:
    """The facts of a local model folder, a LoRA folder's local base or the shipped default model;
    None where only loading can tell (a single file, a hub id, an upscaler)."""
    from . import hub
    from .model_checks import read_json_object
    from .models import read_defaults

    path = _folder_of(model)
    if path is None:
        return None
    path = hub.resolve(path if path != "default" else None, allow_pickle)
    unet = read_json_object(path / "unet" / "config.json", "unet")
    vae = read_json_object(path / "vae" / "config.json", "vae")
    blocks = vae.get("block_out_channels")
    sample = unet.get("sample_size")
    if not isinstance(blocks, list) or not blocks or not isinstance(sample, int) or unet.get("in_channels") == 7:
        return None  # loading reports what is wrong (or it is the x4 upscaler, sized otherwise)
    factor = 2 ** (len(blocks) - 1)
    sched = path / "scheduler" / "scheduler_config.json"
    timesteps = read_json_object(sched, "scheduler").get("num_train_timesteps") if sched.is_file() else None
    guidance = read_defaults(path).get("guidance")
    return ModelFacts(path, factor, sample * factor, timesteps if isinstance(timesteps, int) else None,
                      guidance, unet, vae)


def _folder_of(model) -> Path | str | None:
    """The local folder holding `model`'s weights ("default": the shipped model), or None."""
    from .lora import lora_base

    if model is None:
        return "default"
    local = Path(model).expanduser()
    if not local.is_dir():
        return None
    base = lora_base(local)
    if base is None:
        return local
    return base if base == "default" or Path(base).is_dir() else None


def check_request(cfg, facts: ModelFacts | None, hires: float | None = None) -> None:
    """Refuse, before loading, a `generate` request (GenerateConfig) the model's configs rule
    out: a side that is no multiple of the VAE factor, more steps than training timesteps, an
    image whose denoising cannot fit in memory (the estimate of `resources.py`, at its lowest
    dtype). Loading and the pipeline check all of it again with the weights in hand."""
    if facts is None:
        return
    from .workflows.hires import hires_size

    label = params.flag_label
    width = params.size(label, "width", cfg.width, facts.factor) if cfg.width is not None else facts.native
    height = params.size(label, "height", cfg.height, facts.factor) if cfg.height is not None else facts.native
    if cfg.steps is not None:
        params.steps(label, cfg.steps, facts.train_timesteps)
    if hires:
        width, height = hires_size(width, height, hires, facts.factor)
    _check_memory(cfg, facts, width, height)


def _check_memory(cfg, facts: ModelFacts, width: int, height: int) -> None:
    from .resources import batch_that_fits, generation_bytes
    from .runtime import resolve_device

    guidance = cfg.guidance if cfg.guidance is not None else facts.guidance
    itemsize = 4 if cfg.dtype == "fp32" else 2  # the lowest the load may pick: the estimate stays low

    def need(batch: int) -> int:
        return generation_bytes(facts.unet, facts.vae, batch, width, height, guidance != 1.0, itemsize, itemsize)

    batch_that_fits(need, 1, resolve_device(cfg.device), f"a {width}x{height} image")


def weights_bytes(model) -> int | None:
    """Bytes of weights a load of `model` reads (a single file's size), None where unknown."""
    path = _folder_of(model)
    if path == "default":
        path = _default_dir()
    if path is None:
        local = Path(model).expanduser()
        return local.stat().st_size if local.is_file() else None
    found = [f for part in LOADED_PARTS if (path / part).is_dir() for f in (path / part).iterdir()
             if f.suffix in WEIGHT_SUFFIXES and f.is_file()]
    return sum(f.stat().st_size for f in found)


def loading_line(model, what: str = "loading") -> str:
    """"loading checkpoints/emoji (27 MB)...": what a CLI prints while the weights load."""
    shown = shown_path(model) if model is not None else f"the default model {shown_path(_default_dir())}"
    try:
        size = weights_bytes(model)
    except OSError:
        size = None
    return f"{what} {shown}" + (f" ({size / 1e6:,.0f} MB)" if size else "") + "..."


def _default_dir() -> Path:
    from .hub import default_model_dir

    return default_model_dir()


def shown_path(ref) -> str:
    """A path as the user reads it best: relative to the current folder when inside it."""
    text = str(ref)
    if not Path(text).expanduser().exists():
        return text  # a hub id
    try:
        rel = os.path.relpath(Path(text).expanduser().resolve())
    except ValueError:  # another drive on Windows
        return text
    return text if rel.startswith("..") else rel


def note(text: str | None, seen: set | None = None) -> None:
    """One line on stderr that the user should read, however quiet the run; once per `seen`."""
    if text is None or (seen is not None and text in seen):
        return
    if seen is not None:
        seen.add(text)
    print(f"latentdiff: note: {text}", file=sys.stderr, flush=True)


def size_note(native: int, factor: int, width: int, height: int, hires: float | None = None,
              outpainting: bool = False) -> str | None:
    """What to expect where the images denoised are far larger than the model's trained size
    (`width` x `height` is the first pass; a `hires` scale makes the second), or None."""
    from .workflows.hires import hires_size

    if hires:
        width, height = hires_size(width, height, hires, factor)
    ratio = width * height / native**2
    if ratio <= AREA_NOTE_RATIO:
        return None
    trained = f"the {native}x{native} images this model was trained on"
    expect = "expect repeated, tiled shapes rather than one larger picture"
    if hires:
        return (f"hires fix to {width}x{height} is {ratio:.1f}x the area of {trained}: {expect}; drop --hires and "
                f"enlarge the image instead (--upscaler MODEL, or an image editor)")
    if outpainting:
        return (f"the outpainted canvas {width}x{height} is {ratio:.1f}x the area of {trained}: {expect}; "
                f"outpaint less at a time, or use a model trained at a larger size")
    return (f"{width}x{height} is {ratio:.1f}x the area of {trained}: {expect}; generate at {native}x{native} "
            f"and enlarge the result (--upscaler MODEL, or an image editor)")
