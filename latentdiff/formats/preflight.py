"""What a model's small files say before its weights load, and what a request can be checked
against with them: the VAE's scale factor, the image size the model was trained at, its training
timesteps and its weights' size. Also the one-line notes a CLI prints while it loads and where a
request asks for more than the model can draw.

A request that cannot work fails here in one line, before the 5-15 s of loading (issue 22).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import latentdiff.config.params as params
import latentdiff.models.facts as facts
import latentdiff.models.hub as hub
from latentdiff.errors import UsageError
from latentdiff.formats import addons
from latentdiff.formats.lora_merge import lora_base
from latentdiff.formats.transformer_tables import SUPPORTED
from latentdiff.models.facts import ModelFacts

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".gguf")
LOADED_PARTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
# A request over this multiple of the trained image area gets a note: models repeat and tile their
# subjects there (SD 1.5 at 768x768, the 64 px emoji model at 128 px).
AREA_NOTE_RATIO = 2.0


def model_facts(model, allow_pickle: bool = False) -> ModelFacts | None:
    """The facts of a local model folder, a LoRA folder's local base or the shipped default model;
    None where only loading can tell (a single file, a hub id, an upscaler, an odd config, which
    loading then refuses with its own message). A folder that is no model is refused here."""
    path = _folder_of(model)
    if path is None:
        return None
    return facts.model_facts(hub.locate(path if path != "default" else None, allow_pickle))


def _folder_of(model) -> Path | str | None:
    """The local folder holding `model`'s weights ("default": the shipped model), or None."""
    if model is None:
        return "default"
    local = Path(model).expanduser()
    if not local.is_dir():
        return None
    base = lora_base(local)
    if base is None:
        return local
    if base == "default":
        return base
    return Path(base) if Path(base).is_dir() else None


def check_request(cfg, options) -> None:
    """Refuse, before loading, a `generate` request (GenerateConfig, and its ImageOptions) that the
    model's small files rule out: a <lora:...> tag of no file in --lora-dir, a folder or single file
    that is no usable model, a --vae file that is no VAE, a side that is no multiple of the VAE factor, more steps than training
    timesteps, an image whose denoising cannot fit in memory (the estimate of `resources.py`; not
    with an init image, whose own size counts). The pipeline checks it all again after loading."""
    addons.parse(cfg.loras, cfg.embeddings)  # the files exist
    if cfg.prompt_syntax == "a1111":  # each <lora:NAME:W> tag's file is in --lora-dir
        # Here, not at the top: it imports torch, which preflight.py must not pay for at start-up.
        from latentdiff.formats.lora_tags import lora_specs, strip_tags

        for prompt in cfg.prompts:
            lora_specs(strip_tags(prompt)[1], cfg.lora_dir)
    if cfg.vae is not None:
        # Here, not at the top: it imports torch, which the refusals before it must not wait for.
        from latentdiff.formats.vae import check_vae_ref

        check_vae_ref(cfg.vae)
    is_file = cfg.model is not None and Path(cfg.model).expanduser().is_file()
    if getattr(cfg, "components", None) is not None and not is_file:
        raise UsageError(f"--components is for a transformer file as --model ({SUPPORTED}); {cfg.model} is none")
    facts = model_facts(cfg.model, cfg.allow_pickle)
    if facts is None:
        if is_file:
            # Here, not at the top: it imports torch, which preflight.py must not pay for at start-up.
            from latentdiff.formats.single_file import check_file
            from latentdiff.formats.transformer_file import check_components, transformer_family

            path = Path(cfg.model).expanduser()
            family = transformer_family(path)
            if family:
                check_components(path, family, getattr(cfg, "components", None))
            else:
                check_file(path)
        return
    _check_model_options(cfg, facts)
    label = params.flag_label
    width = params.size(label, "width", cfg.width, facts.factor) if cfg.width is not None else facts.native
    height = params.size(label, "height", cfg.height, facts.factor) if cfg.height is not None else facts.native
    if options.hires:
        width, height = params.hires_size(width, height, options.hires, facts.factor)
    if options.image is None:
        _check_memory(cfg, facts, width, height)


def _check_model_options(cfg, facts: ModelFacts) -> None:
    """The model given is a text-to-image one; --steps and --clip-skip suit it. (The scheduler's
    own check of the steps waits for the load: importing diffusers' schedulers takes seconds.)"""
    if facts.unet.get("in_channels") == facts.vae.get("latent_channels", 4) + 3:
        raise UsageError(
            f"{cfg.model} is a diffusion upscaler, not a text-to-image model; use `latentdiff upscale "
            "IMAGE --model` or generate --upscaler"
        )
    steps = cfg.steps if cfg.steps is not None else facts.defaults.get("steps", params.FALLBACK_STEPS)
    params.steps(params.flag_label, steps, facts.train_timesteps)
    _check_unclip(cfg, facts)
    clip_skip = cfg.clip_skip if cfg.clip_skip is not None else facts.defaults.get("clip_skip", 1)
    if facts.text_layers is not None and clip_skip > facts.text_layers:
        raise UsageError(
            f"--clip-skip must be a whole number from 1 (last layer) to {facts.text_layers} for this "
            f"model's text encoder, got {clip_skip}"
        )


def _check_unclip(cfg, facts: ModelFacts) -> None:
    """Stable unCLIP's flags on a Stable unCLIP model only (families/unclip.py), --variations a file."""
    names = ("variations", "noise_level", "prior", "prior_steps", "prior_guidance")
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(cfg, n, None) is not None]
    if given and facts.unet.get("class_embed_type") != "projection":
        raise UsageError(
            f"{', '.join(given)} need a Stable unCLIP model (an image-embedding decoder); {cfg.model} is not one"
        )
    if cfg.variations is not None and not Path(cfg.variations).expanduser().is_file():
        raise UsageError(f"--variations {cfg.variations}: no such picture file")


def _check_memory(cfg, facts: ModelFacts, width: int, height: int) -> None:
    """The memory check the pipeline makes, with the dtypes loading will pick."""
    # Here, not at the top: these import torch, which the refusals before them must not wait for.
    from latentdiff.models.weights import parameter_count
    from latentdiff.runtime.device import resolve_device, resolve_dtype
    from latentdiff.runtime.memory import batch_that_fits, generation_bytes
    from latentdiff.runtime.placement import cpu_dtype_pref, vae_dtype

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device, cpu_dtype_pref(facts.defaults, parameter_count(facts.path / "unet")))
    guidance = cfg.guidance if cfg.guidance is not None else facts.defaults.get("guidance", params.FALLBACK_GUIDANCE)
    unet_bytes, vae_bytes = dtype.itemsize, vae_dtype(dtype, facts.vae, device).itemsize

    def need(batch: int) -> int:
        return generation_bytes(facts.unet, facts.vae, batch, width, height, guidance != 1.0, unet_bytes, vae_bytes)

    batch_that_fits(need, 1, device, f"a {width}x{height} image")


def weights_bytes(model) -> int | None:
    """Bytes of weights a load of `model` reads (a single file's size), None where unknown."""
    path = _folder_of(model)
    if path == "default":
        path = _default_dir()
    if path is None:
        local = Path(model).expanduser()
        return local.stat().st_size if local.is_file() else None
    found = [
        f
        for part in LOADED_PARTS
        if (path / part).is_dir()
        for f in (path / part).iterdir()
        if f.suffix in WEIGHT_SUFFIXES and f.is_file()
    ]
    return sum(f.stat().st_size for f in found)


def loading_line(model, what: str = "loading") -> str:
    """ "loading checkpoints/emoji (27 MB)...": what a CLI prints while the weights load."""
    shown = shown_path(model) if model is not None else f"the default model {shown_path(_default_dir())}"
    try:
        size = weights_bytes(model)
    except OSError:
        size = None
    return f"{what} {shown}" + (f" ({megabytes(size)})" if size else "") + "..."


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:,.0f} MB"


def _default_dir() -> Path:
    return hub.default_model_dir()


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


def note_size(pipe, request, opts) -> None:
    """Say once per pipeline and size where `pipe` would denoise images far larger than it was
    trained for (`request`: the resolved config.request.Request, `opts`: its ImageOptions)."""
    start = None if opts.image is None else "outpaint" if opts.outpaint is not None else "image"
    note(size_note(pipe.native_size, pipe.scale_factor, request.width, request.height, opts.hires, start), pipe.notes)


def size_note(
    native: int, factor: int, width: int, height: int, hires: float | None = None, start: str | None = None
) -> str | None:
    """What to expect where the images denoised are far larger than the model's trained size, or
    None. `width` x `height` is the first pass; a `hires` scale makes the second; `start` is
    "image" (img2img, inpainting) or "outpaint" where the size came from a picture."""
    if hires:
        width, height = params.hires_size(width, height, hires, factor)
    ratio = width * height / native**2
    if ratio <= AREA_NOTE_RATIO:
        return None
    what = {"outpaint": "the outpainted canvas ", "image": "the starting picture's "}.get(start, "")
    what = "hires fix to " if hires else what
    head = (
        f"{what}{width}x{height} is {ratio:.1f}x the area of the {native}x{native} images this model was "
        f"trained on: expect repeated, tiled shapes rather than one larger picture; "
    )
    if hires:
        return head + "drop --hires and enlarge the image instead (--upscaler MODEL, or an image editor)"
    if start == "outpaint":
        return head + "outpaint less at a time, or use a model trained at a larger size"
    if start == "image":
        return head + f"resize it to about {native}x{native} (--width/--height), or use a model trained larger"
    return head + f"generate at {native}x{native} and enlarge the result (--upscaler MODEL, or an image editor)"
