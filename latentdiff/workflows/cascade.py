"""The cascade after the base image (Imagen, Saharia et al. 2022; Ho et al. 2021): any number of
super-resolution stages in order, each a pixel SR stage in DeepFloyd IF's stage II layout
(workflows/pixel.py) or a latent x4-style upscaler (workflows/upscale.py). Each stage's steps,
guidance and noise level come from its spec, else its own latentdiff.json, else its pipeline's
defaults; all of them are recorded in the PNG.

Stages come from `generate --upscaler DIR[,steps=N][,guidance=G][,noise_level=L]` (repeatable, in
order) or from the model folder's latentdiff.json: `"cascade": [{"path": "stage2", "steps": 20,
"guidance": 1.0, "noise_level": 100}, ...]` (paths inside the model folder), or its older
`"upscaler": "DIR"` (one stage). A pixel stage takes the prompt through the base model's text encoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdiff.config.params import hires_size
from latentdiff.errors import UsageError
from latentdiff.families.pixel import check_noise_level
from latentdiff.images.write import to_pil
from latentdiff.models.files import confined
from latentdiff.workflows.pixel import load_pixel_stage, sr_size, super_resolve
from latentdiff.workflows.source import pixel_hash, read_picture
from latentdiff.workflows.start import to_tensor
from latentdiff.workflows.upscale import with_model_upscaler

SETTINGS = {"steps": int, "guidance": float, "noise_level": int}
IF_SR_DEFAULTS = {"steps": 50, "guidance": 4.0, "noise_level": 250}  # IFSuperResolutionPipeline's


@dataclass(frozen=True)
class Stage:
    path: str
    steps: int | None = None
    guidance: float | None = None
    noise_level: int | None = None


def parse_stage(spec) -> Stage:
    """A stage from `DIR[,steps=N][,guidance=G][,noise_level=L]` or a latentdiff.json entry (a mapping
    with "path"); one clear line for anything else."""
    if isinstance(spec, Stage):
        return spec
    if isinstance(spec, str):
        path, *items = spec.split(",")
        pairs = [item.split("=", 1) for item in items]
        if any(len(p) != 2 for p in pairs):
            raise UsageError(
                f"cascade stage {spec!r}: settings go as NAME=VALUE after the folder (steps, guidance, noise_level)"
            )
        spec = {"path": path, **dict(pairs)}
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"]:
        raise UsageError(f'a cascade stage is a folder, or a mapping with a "path"; got {str(spec)[:60]!r}')
    unknown = sorted(set(spec) - {"path", *SETTINGS})
    if unknown:
        raise UsageError(
            f"cascade stage {spec['path']!r}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}"
        )
    return Stage(spec["path"], **{k: _setting(spec["path"], k, v) for k, v in spec.items() if k in SETTINGS})


def _setting(path: str, name: str, value):
    kind = SETTINGS[name]
    try:
        number = kind(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    ok = isinstance(number, (int, float)) and not isinstance(number, bool) and kind(number) == number
    if not ok or number < (1 if name == "steps" else 0) or (name == "steps" and number > 1000):
        raise UsageError(
            f"cascade stage {path!r}: {name} must be a {'whole ' if kind is int else ''}number "
            f"{'from 1 to 1000' if name == 'steps' else '>= 0'}, got {str(value)[:40]!r}"
        )
    return kind(number)


def stages_of(pipe, opts) -> list[Stage]:
    """The stages to run after the base image: the call's, else the model's own (none with upscale=False)."""
    given = opts.upscaler
    if given:
        return [parse_stage(s) for s in ([given] if isinstance(given, str) else given)]
    if not opts.upscale or pipe.model_dir is None:
        return []
    own = pipe.components.defaults.get("cascade")
    if own is None:
        return []
    if not isinstance(own, list):
        raise UsageError(f'{pipe.model_dir}/latentdiff.json: "cascade" must be a list of stages')
    stages = [parse_stage(s) for s in own]
    folder = Path(pipe.model_dir)
    return [
        Stage(str(confined(folder, s.path, "latentdiff.json (cascade)")), s.steps, s.guidance, s.noise_level)
        for s in stages
    ]


def cascade_options(pipe, opts, size):
    """`opts` with the model's own upscaler filled in (workflows/upscale.py), the stages' sizes checked
    against the base image's `size` (w, h) before anything runs."""
    opts = with_model_upscaler(pipe, opts)
    if opts.hires:  # the base image is the hires pass's
        size = hires_size(*size, opts.hires, pipe.scale_factor)
    check_chain(pipe, stages_of(pipe, opts), size)
    return opts


def is_pixel_stage(path) -> bool:
    index = Path(path) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == "IFSuperResolutionPipeline"


def run_cascade(pipe, image, prompt: str, seed: int, stages: list[Stage], tile=None):
    """`image` through every stage in order: (the final image, one record per stage); the sizes were
    checked before the base image was made (cascade_options)."""
    records = []
    for stage in stages:
        if is_pixel_stage(stage.path):
            image, used = pixel_stage(pipe, stage, image, prompt, seed)
        else:
            image = pipe.upscale(image, prompt=prompt, seed=seed, tile=tile, upscaler=stage.path, **_given(stage))
            used = {k: image.info["latentdiff"].get(k) for k in SETTINGS}
        records.append({"path": stage.path, **used, "size": list(image.size)})
    return image, records


def _given(stage: Stage) -> dict:
    return {k: getattr(stage, k) for k in SETTINGS if getattr(stage, k) is not None}


def _pixel(pipe, path: str):
    key = ("pixel", path)
    if key not in pipe.upscalers:
        pipe.upscalers[key] = load_pixel_stage(path, pipe.device, pipe.dtype)
    return pipe.upscalers[key]


def check_chain(pipe, stages: list[Stage], size) -> None:
    """Refuse, before any stage runs, a stage whose input size is not what the one before gives, or a
    pixel stage's noise level beyond its maximum."""
    w, h = size
    for k, stage in enumerate(stages, 1):
        if not Path(stage.path).is_dir():
            raise UsageError(f"cascade stage {k}: {stage.path} is not a model folder")
        if not is_pixel_stage(stage.path):
            continue  # a latent upscaler takes any size (tiles); it enlarges by its VAE's factor
        c = _pixel(pipe, stage.path)
        if stage.noise_level is not None:
            check_noise_level(stage.noise_level, c.upscaler["max_noise_level"])
        side = int(c.unet.config.sample_size) // int(c.defaults.get("scale", 4))
        if (w, h) != (side, side):
            raise UsageError(
                f"cascade stage {k} ({stage.path}) takes {side}x{side} images; the stage before gives {w}x{h}: "
                "the stage sizes do not chain"
            )
        w = h = int(c.unet.config.sample_size)


def pixel_upscale(pipe, image, prompt, negative_prompt, steps, guidance, noise_level, seed, path):
    """`image` (a path or PIL image) through the pixel SR stage `path` alone (Pipeline.upscale):
    a PIL image whose metadata names the stage and its settings."""
    low, source = read_picture(image, "image to upscale")
    stage = parse_stage({"path": str(path), **_set(steps, guidance, noise_level)})
    check_chain(pipe, [stage], low.size)
    out, used = pixel_stage(pipe, stage, low, prompt, seed, negative_prompt)
    info = {"prompt": prompt, "negative_prompt": negative_prompt, "seed": seed, "upscaler": str(path), **used}
    out.info["latentdiff"] = {**info, "upscale_of": source, "upscale_of_hash": pixel_hash(low)}
    return out


def _set(steps, guidance, noise_level) -> dict:
    given = {"steps": steps, "guidance": guidance, "noise_level": noise_level}
    return {k: v for k, v in given.items() if v is not None}


def pixel_stage(pipe, stage: Stage, image, prompt: str, seed: int, negative_prompt: str = ""):
    c = _pixel(pipe, stage.path)
    used = {**IF_SR_DEFAULTS, **{k: c.defaults[k] for k in SETTINGS if k in c.defaults}, **_given(stage)}
    check_noise_level(used["noise_level"], c.upscaler["max_noise_level"])
    low = to_tensor(image).to(pipe.device)
    guided = used["guidance"] > 1.0  # as IFSuperResolutionPipeline
    cond, uncond = pipe.conditioning([prompt], [negative_prompt] if guided else None, *sr_size(c, low.shape[2:]))
    width = c.unet.config.encoder_hid_dim or c.unet.config.cross_attention_dim
    if cond.hidden.shape[-1] != width:
        raise UsageError(
            f"cascade stage {stage.path} reads text {width} wide; this model's text encoder gives "
            f"{cond.hidden.shape[-1]} (a pixel stage shares the base model's text encoder)"
        )
    gens = [torch.Generator("cpu").manual_seed(seed)]
    out = super_resolve(
        c, low, cond, uncond, used["steps"], used["guidance"], used["noise_level"], gens, progress=pipe.progress_bar(1)
    )
    return to_pil(out)[0], used
