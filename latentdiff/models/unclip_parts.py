"""The parts a Stable unCLIP model keeps beside its UNet (families/unclip.py), in the folders diffusers'
StableUnCLIPPipeline and StableUnCLIPImg2ImgPipeline use: image_normalizer/, image_noising_scheduler/,
image_encoder/ + feature_extractor/ (variations), prior/ + prior_text_encoder/ + prior_tokenizer/ +
prior_scheduler/ (text through a prior). Read into, and written from, `Components.unclip`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from latentdiff.errors import ModelError, UsageError
from latentdiff.models.configs import component_config, read_scheduler_config, text_config
from latentdiff.models.files import is_present
from latentdiff.runtime.reading import read_json

PRIOR_MIN_STEPS = 2
FOLDERS = (
    "image_normalizer",
    "image_noising_scheduler",
    "image_encoder",
    "feature_extractor",
    "prior",
    "prior_text_encoder",
    "prior_tokenizer",
    "prior_scheduler",
)


def has_unclip(path: Path, index: dict) -> bool:
    return "image_normalizer" in index or (path / "image_normalizer").is_dir()


def _present(path: Path, index: dict, name: str) -> bool:
    entry = index.get(name)
    named = isinstance(entry, list) and len(entry) == 2 and entry[1] is not None
    return named or (name not in index and (path / name).is_dir())


def load_unclip(path: Path, index: dict, module: Callable, image_encoder: Callable, tokenizer: Callable) -> dict:
    """Components.unclip of the model folder `path`: `module(cls, config, folder_name)` builds a module
    from its folder, `image_encoder(folder)` a CLIP vision encoder, `tokenizer(folder)` a CLIPTokenizer."""
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    def config(name: str) -> dict:
        return component_config(path / name / "config.json", name.replace("_", " "))

    noising = path / "image_noising_scheduler" / "scheduler_config.json"
    parts = {
        "image_normalizer": module(StableUnCLIPImageNormalizer, config("image_normalizer"), "image_normalizer"),
        "image_noising_scheduler": read_scheduler_config(noising) if is_present(noising, "scheduler") else {},
        "image_encoder": None,
        "feature_extractor": None,
    }
    if _present(path, index, "image_encoder"):
        parts["image_encoder"] = image_encoder(path / "image_encoder")
        parts["feature_extractor"] = image_processor(path / "feature_extractor")
    if _present(path, index, "prior"):
        parts.update(load_prior_parts(path, module, tokenizer, PRIOR_FOLDERS["unclip"]))
    return parts


# The prior's folders: in a Stable unCLIP model (StableUnCLIPPipeline), in a Kandinsky 2.2 prior
# (KandinskyV22PriorPipeline), which names them without the prefix, and in Karlo's UnCLIPPipeline
# (kakaobrain/karlo-v1-alpha: the prior beside a pixel decoder and two SR stages, which are not read).
PRIOR_FOLDERS = {
    "unclip": ("prior", "prior_text_encoder", "prior_tokenizer", "prior_scheduler"),
    "kandinsky": ("prior", "text_encoder", "tokenizer", "scheduler"),
    "karlo": ("prior", "text_encoder", "tokenizer", "prior_scheduler"),
}
PRIOR_PIPELINES = {
    "KandinskyV22PriorPipeline": "kandinsky",
    "KandinskyPriorPipeline": "kandinsky",
    "UnCLIPPipeline": "karlo",
}


def check_prior_folder(path, what: str) -> str:
    """The layout ("kandinsky" or "karlo") of the prior folder `path`, a Kandinsky 2.2 prior or a Karlo
    UnCLIPPipeline by its model_index.json, else one UsageError that starts with `what` (e.g. "prior")."""
    folder = Path(path)
    index = folder / "model_index.json"
    if not folder.is_dir() or not index.is_file():
        raise UsageError(
            f"{what} {path} is not a Kandinsky 2.2 prior folder (KandinskyV22PriorPipeline's layout) or a Karlo "
            "UnCLIPPipeline folder"
        )
    data = read_json(index, "model index", error=UsageError)
    cls = data.get("_class_name") if isinstance(data, dict) else None
    if cls not in PRIOR_PIPELINES:
        raise UsageError(
            f"{what} {path} is a {cls or 'folder without a pipeline class'}, not a Kandinsky 2.2 prior or a "
            "Karlo UnCLIPPipeline"
        )
    return PRIOR_PIPELINES[cls]


def load_prior_parts(path: Path, module: Callable, tokenizer: Callable, folders: tuple) -> dict:
    """The prior, its CLIP text encoder with projection, its tokenizer and scheduler config, from
    `folders` of `path` (PRIOR_FOLDERS), under Components.unclip's names."""
    import diffusers
    import transformers

    prior, te, tok, sched = folders
    config = component_config(path / prior / "config.json", "prior")
    te_config = text_config(path / te / "config.json", "CLIPTextModelWithProjection")
    return {
        "prior": module(diffusers.PriorTransformer, config, prior),
        "prior_text_encoder": module(transformers.CLIPTextModelWithProjection, te_config, te),
        "prior_tokenizer": tokenizer(path / tok),
        # UnCLIPScheduler takes 2 steps at the fewest (PRIOR_MIN_STEPS)
        "prior_scheduler": read_scheduler_config(path / sched / "scheduler_config.json", PRIOR_MIN_STEPS),
    }


def image_processor(folder: Path):
    from transformers import CLIPImageProcessor

    f = folder / "preprocessor_config.json"
    if not is_present(f, "feature extractor config"):
        raise ModelError(f"{folder} lacks preprocessor_config.json: the image encoder needs its feature extractor")
    settings = component_config(f, "feature extractor")
    keep = ("size", "crop_size", "do_resize", "do_center_crop", "do_normalize", "image_mean", "image_std", "resample")
    return CLIPImageProcessor(**{k: settings[k] for k in keep if k in settings})


def save_unclip(parts: dict, out: Path) -> None:
    """Write `parts` (Components.unclip) into the model folder `out`, as diffusers saves them."""
    parts["image_normalizer"].save_pretrained(out / "image_normalizer", safe_serialization=True)
    _scheduler(out / "image_noising_scheduler", parts["image_noising_scheduler"], "DDPMScheduler")
    if parts.get("image_encoder") is not None:
        parts["image_encoder"].save_pretrained(out / "image_encoder", safe_serialization=True)
        parts["feature_extractor"].save_pretrained(str(out / "feature_extractor"))
    if parts.get("prior") is not None:
        parts["prior"].save_pretrained(out / "prior", safe_serialization=True)
        parts["prior_text_encoder"].save_pretrained(out / "prior_text_encoder", safe_serialization=True)
        parts["prior_tokenizer"].save_pretrained(str(out / "prior_tokenizer"))
        _scheduler(out / "prior_scheduler", parts["prior_scheduler"], "DDPMScheduler")


def _scheduler(folder: Path, config: dict, default: str) -> None:
    folder.mkdir(exist_ok=True)
    config = {"_class_name": default, **config}
    (folder / "scheduler_config.json").write_text(json.dumps(config, indent=2))
