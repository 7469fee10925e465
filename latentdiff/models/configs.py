"""Every small file of a diffusers model folder, read and checked once before any weights load:
the folder's layout (model_index.json and the component folders it needs), each component's
config, the scheduler's, latentdiff.json's recommended settings, and the weights' sizes from their
headers. `read_configs` returns them as one record (ModelConfigs) for models/assemble.py to build
from; `model_facts` is the lighter read a request is checked against before loading (preflight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from latentdiff.errors import ModelError, UsageError
from latentdiff.models.checks import (
    PIPELINE_CLASSES,
    check_config_numbers,
    check_defaults,
    check_diffusers_config,
    check_numbers_where_numbers,
    check_scheduler_config,
    guarded,
)
from latentdiff.models.files import confined, is_present, read_json_object
from latentdiff.models.weights import stored_values
from latentdiff.runtime.reading import read_json

SUPPORTED = (
    "SD 1.x, SD 2.x, SDXL (base, refiner) and their inpainting variants, Flux.1 (dev, schnell, Fill, Kontext), Chroma, "
    "SD 3 medium, SD 3.5 (medium, large), FLUX.2 klein, Qwen-Image, Z-Image, Stable unCLIP, "
    "pixel bases in DeepFloyd IF's stage I layout"
)
# (encoder, tokenizer) folder pairs; SDXL has the first two, its refiner only the second, SD3 all three.
TEXT_PARTS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"), ("text_encoder_3", "tokenizer_3"))
# The encoder class of each slot where an old model_index.json names none.
TEXT_DEFAULTS = {
    "text_encoder": "CLIPTextModel",
    "text_encoder_2": "CLIPTextModelWithProjection",
    "text_encoder_3": "T5EncoderModel",
}
# Each text encoder class with the transformers config class it reads (Qwen-Image's Qwen2.5-VL, Z-Image's Qwen3).
TEXT_CONFIGS = {
    "CLIPTextModel": "CLIPTextConfig",
    "CLIPTextModelWithProjection": "CLIPTextConfig",
    "T5EncoderModel": "T5Config",
    "Qwen2_5_VLForConditionalGeneration": "Qwen2_5_VLConfig",
    "Qwen3Model": "Qwen3Config",
    "Qwen3ForCausalLM": "Qwen3Config",
}
TEXT_CLASSES = tuple(TEXT_CONFIGS)
TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast", "T5TokenizerFast", "Qwen2Tokenizer", "Qwen2TokenizerFast")
# Pipeline-level options of model_index.json that change how prompts are conditioned (or guided: FLUX.2's).
INDEX_OPTIONS = ("force_zeros_for_empty_prompt", "requires_aesthetics_score", "is_distilled")
DEFAULTS_FILE = "latentdiff.json"  # our recommended settings; diffusers ignores the file
MAX_NOISE_LEVEL = 350  # diffusers' StableDiffusionUpscalePipeline default


@dataclass(frozen=True)
class ModelConfigs:
    """What a model folder's configs say, every one checked."""

    path: Path
    index: dict  # model_index.json
    unet: dict
    vae: dict
    text: dict  # encoder folder -> (class name, transformers' CLIPTextConfig), for the encoders it has
    scheduler: dict
    defaults: dict  # latentdiff.json
    upscaler: dict  # Components.upscaler
    values: dict = field(default_factory=dict)  # component -> weights.stored_values(): (count, exact)
    unet_params: int | None = None  # the UNet's weight count from its safetensors headers; None for pickle
    denoiser: str = "unet"  # the denoiser's folder: unet, or transformer (checks.diffusers_class)


def read_configs(path: Path, defaults_from: Path | None = None) -> ModelConfigs:
    """Check the folder's layout, then read and check every config of the model at `path`; the
    recommended settings of `defaults_from` (a LoRA folder) override the model's own."""
    index = check_model_dir(path)
    defaults = {**read_defaults(path), **(read_defaults(defaults_from) if defaults_from is not None else {})}
    folder = denoiser_folder(index, path)
    unet = _component(path, folder, folder)
    vae = pixel_vae_config(path, index) if is_pixel_index(index) else _component(path, "vae", "vae")
    text = {}
    for te_name, _ in TEXT_PARTS:
        cls_name = text_encoder_class(index, path, te_name)
        if cls_name is not None:
            text[te_name] = (cls_name, text_config(path / te_name / "config.json", cls_name))
    values = {name: stored_values(path / name) for name in ((*text,) if is_pixel_index(index) else ("vae", *text))}
    values["unet"] = stored_values(path / folder)
    scheduler = read_scheduler_config(path / "scheduler" / "scheduler_config.json")
    unet_params = values["unet"][0] if values["unet"][1] else None
    upscaler = read_upscaler(path, index)
    return ModelConfigs(path, index, unet, vae, text, scheduler, defaults, upscaler, values, unet_params, folder)


def is_pixel_index(index: dict) -> bool:
    """A pixel base (IFPipeline's layout, families/pixel.py): PixelSpace stands where the VAE sits."""
    return index.get("_class_name") == "IFPipeline"


def pixel_vae_config(path: Path, index: dict) -> dict:
    """What a pixel base reports where a VAE's config would be (families/pixel_space.PixelSpace); its
    prompt is read by a CLIP text encoder (DeepFloyd IF's own T5 is refused)."""
    cls = text_encoder_class(index, path, "text_encoder")
    if cls != "CLIPTextModel":
        raise UsageError(
            f"{path} is a pixel base whose text encoder is {cls}; latentdiff's pixel family reads prompts with "
            "a CLIP text encoder (DeepFloyd IF's T5 is not supported yet)"
        )
    # Here: pixel_space imports torch, which reading configs (preflight) must not pay for otherwise.
    from latentdiff.families.pixel_space import PIXEL_CONFIG

    return dict(PIXEL_CONFIG)


def denoiser_folder(index: dict, path: Path) -> str:
    """The folder of the model's denoiser: `transformer` where model_index.json names one (or,
    without an index entry, the folder exists), else `unet`."""
    return "transformer" if "transformer" in index or (path / "transformer").is_dir() else "unet"


def _component(path: Path, name: str, what: str) -> dict:
    return diffusers_config(path / name / "config.json", what)


def diffusers_config(config_path: Path, what: str) -> dict:
    """A UNet's or VAE's config.json (`what`: unet or vae), checked (checks.check_diffusers_config)."""
    return check_diffusers_config(read_json_object(config_path, what), what, config_path)


def component_config(config_path: Path, what: str) -> dict:
    """A component's config.json, its numbers bounded."""
    config = read_json_object(config_path, what)
    check_config_numbers(config, config_path)
    return config


def text_config(config_path: Path, cls_name: str = "CLIPTextModel"):
    """A text encoder's config.json as transformers' config class of `cls_name` (CLIPTextConfig, T5Config)."""
    return clip_config(component_config(config_path, "text encoder"), config_path, cls_name)


def clip_config(te_dict: dict, where, cls_name: str = "CLIPTextModel"):
    """A text encoder's config dict, checked, as transformers' config class of `cls_name`."""
    # Here, not at the top: importing transformers takes seconds (preflight reads configs without it).
    import transformers

    config_cls = getattr(transformers, TEXT_CONFIGS.get(cls_name, "CLIPTextConfig"))
    check_config_numbers(te_dict, where)
    check_numbers_where_numbers(te_dict, config_cls(), where)
    return guarded(lambda: config_cls.from_dict(te_dict), where)


# ---- the folder -------------------------------------------------------------------------------
def check_model_dir(path: Path) -> dict:
    """Refuse a folder that is no diffusers model of a supported kind, or lacks a component folder
    its index names; return its model_index.json."""
    if not path.is_dir():
        raise ModelError(f"model path {path} is not a directory")
    if not any(path.iterdir()):
        raise ModelError(f"model directory {path} is empty")
    what = describe_folder(path)
    if what and "Prior" in what:  # Kandinsky's or Karlo's prior alone: half of an unCLIP model
        raise UsageError(
            f"{path} is {what}: a prior without a decoder; give a Stable unCLIP model (its prior/ inside) as --model"
        )
    if what:
        raise ModelError(f"{path} is {what}, not a model this can generate with; supported: {SUPPORTED}")
    if not is_present(path / "model_index.json", "model index"):
        raise ModelError(f"{path} is not a diffusers-format model: model_index.json is missing")
    index = read_index(path)
    missing = [c for c in required_components(path, index) if not (path / c).is_dir()]
    if missing:
        raise ModelError(f"model {path} lacks component folder(s): {', '.join(missing)}")
    return index


def describe_folder(path: Path) -> str | None:
    """What a folder that is not an SD/SDXL diffusers model holds, when it can be told."""
    cls = _class_name(path / "model_index.json")
    if cls is not None:
        sd = cls.startswith(PIPELINE_CLASSES)
        return None if sd or not cls else f"a {cls} model"
    cls = _class_name(path / "config.json")
    return f"a lone {cls} component, not a whole model" if cls else None


def _class_name(config: Path) -> str | None:
    """The `_class_name` a diffusers JSON config names ("" if none); None without a readable file."""
    if not config.is_file():
        return None
    try:
        return str(read_json(config, "config", error=ModelError).get("_class_name", ""))
    except (ModelError, AttributeError):
        return None


def required_components(path: Path, index: dict) -> list[str]:
    """The component folders a model needs: SD's five, SDXL's with `text_encoder_2` and
    `tokenizer_2`, an SDXL refiner's without the first encoder (as model_index.json says)."""
    needed = [denoiser_folder(index, path), *([] if is_pixel_index(index) else ["vae"]), "scheduler"]
    for te_name, tok_name in TEXT_PARTS:
        if text_encoder_class(index, path, te_name) is not None:
            needed += [te_name, tok_name]
    return needed


def read_index(path: Path) -> dict:
    f = path / "model_index.json"
    return read_json_object(f, "model index") if is_present(f, "model index") else {}


def text_encoder_class(index: dict, path: Path, name: str) -> str | None:
    """The class of text encoder `name` the model has, or None when it has none: as
    model_index.json says, else (older indexes) `text_encoder` always and `_2` if its folder exists."""
    entry = index.get(name)
    if isinstance(entry, list) and len(entry) == 2:
        cls_name = entry[1]
    elif name == "text_encoder" or (path / name).is_dir():
        cls_name = TEXT_DEFAULTS[name]
    else:
        return None
    if cls_name is not None and cls_name not in TEXT_CLASSES:
        raise ModelError(
            f"{path}: text encoder class {cls_name!r} is not supported (supported: {', '.join(TEXT_CLASSES)})"
        )
    return cls_name


# ---- the small files beside the components ---------------------------------------------------
def read_scheduler_config(path: Path, steps: int = 1) -> dict:
    return check_scheduler_config(read_json_object(path, "scheduler"), path, steps)


def read_upscaler(path: Path, index: dict) -> dict:
    """The low-res scheduler config and max noise level diffusers keeps beside an upscaler's UNet."""
    f = path / "low_res_scheduler" / "scheduler_config.json"
    present = is_present(f, "low-res scheduler config")
    if "low_res_scheduler" not in index and not present:
        return {}
    low = read_scheduler_config(f) if present else {"_class_name": "DDPMScheduler"}
    level = index.get("max_noise_level", MAX_NOISE_LEVEL)
    if not isinstance(level, int) or level < 0:
        raise ModelError(f"{path / 'model_index.json'}: max_noise_level must be a whole number >= 0, got {level!r}")
    return {"low_res_scheduler": low, "max_noise_level": level}


def read_defaults(path: Path) -> dict:
    f = path / DEFAULTS_FILE
    return check_defaults(read_json_object(f, "latentdiff defaults"), f) if is_present(f, "latentdiff defaults") else {}


def own_upscaler(model_dir, defaults: dict) -> str | None:
    """The folder of the model's own upscaler (latentdiff.json's "upscaler", inside the model folder),
    or None where it names none."""
    name = defaults.get("upscaler")
    if not name or model_dir is None:
        return None
    folder = Path(model_dir)
    path = confined(folder, name, f"{folder / DEFAULTS_FILE} (upscaler)")
    if not path.is_dir():
        raise ModelError(
            f"{folder / DEFAULTS_FILE} names the upscaler {name!r}, but {path} is not a folder; "
            "pass --no-upscale to generate without it"
        )
    return str(path.resolve())
