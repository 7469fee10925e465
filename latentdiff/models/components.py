"""Load and save the components of a diffusers-format model.

We read configs with diffusers/transformers, build each module with its parameters on the
meta device (no random init of weights we are about to overwrite), and assign tensors read
by `weights.py`, so the safetensors-only policy and clear errors hold for every file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import latentdiff.models.checks as model_checks
from latentdiff.errors import ModelError
from latentdiff.runtime.files import as_umask_allows
from latentdiff.models.weights import load_component_state

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "requires_safety_checker": False,
    "image_encoder": [None, None],
    "scheduler": ["diffusers", None],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# (encoder, tokenizer) folder pairs; SDXL has both, its refiner only the second.
TEXT_PARTS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
TEXT_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
# Pipeline-level options of model_index.json that change how prompts are conditioned.
INDEX_OPTIONS = ("force_zeros_for_empty_prompt", "requires_aesthetics_score")
DEFAULTS_FILE = "latentdiff.json"  # our recommended settings; diffusers ignores the file
# Old CLIP checkpoints carry position_ids as a persistent buffer; newer code makes it non-persistent.
_IGNORABLE_UNEXPECTED = ("text_model.embeddings.position_ids", "embeddings.position_ids")


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    defaults: dict
    text_encoder_2: Any = None  # SDXL's CLIPTextModelWithProjection
    tokenizer_2: Any = None
    index: dict = field(default_factory=dict)  # INDEX_OPTIONS found in model_index.json
    # A diffusion upscaler's parts beside the UNet (StableDiffusionUpscalePipeline layout):
    # {"low_res_scheduler": config, "max_noise_level": int}; {} for other models.
    upscaler: dict = field(default_factory=dict)

    def text_encoders(self) -> list:
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]


def quiet_libraries() -> None:
    """diffusers/transformers print progress bars and advice on every load and save; our
    users get one progress bar of our own instead."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.set_verbosity_error()
        lib.utils.logging.disable_progress_bar()


def _classes():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    quiet_libraries()
    return UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextConfig


def _read_json(path: Path, what: str) -> dict:
    return model_checks.read_json_object(path, what)


def _assign(module, component_dir: Path, allow_pickle: bool, device: str, dtype=None, channels_last=False):
    """Fill a meta-initialised module with the weights on disk (floating tensors cast to
    `dtype`, conv weights laid out channels_last, as they are read); refuse any mismatch."""
    from latentdiff.runtime.memory import allocation_errors

    with allocation_errors(f"loading the weights in {component_dir}", "free some memory, or load in fp16/bf16"):
        sd = load_component_state(component_dir, allow_pickle, device="cpu" if device == "mps" else device,
                                  dtype=dtype, channels_last=channels_last)
    return fill(module, sd, component_dir)


def fill(module, sd: dict, where):
    """Assign the tensors of `sd` to `module`; any missing, extra or misshapen one is one error
    naming `where`."""
    try:
        result = module.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(f"weights in {where} do not fit its config: {first[-1].strip()}") from None
    unexpected = [k for k in result.unexpected_keys if k not in _IGNORABLE_UNEXPECTED]
    if result.missing_keys or unexpected:
        keys = (result.missing_keys or unexpected)[:3]
        kind = "lack" if result.missing_keys else "have unexpected"
        raise ModelError(f"weights in {where} {kind} tensors such as {', '.join(keys)}")
    return module


def _build(cls, config, component_dir: Path, allow_pickle: bool, device: str, dtype=None, channels_last=False,
           config_name: str = "config.json"):
    """Check the config against the weights on the meta device, then fill the module from disk."""
    from accelerate import init_empty_weights

    config_path = component_dir / config_name
    if isinstance(config, dict):
        model_checks.check_config_numbers(config, config_path)
    module = model_checks.build_on_meta(cls, config, config_path)
    model_checks.check_size_against_weights(module, model_checks.stored_values(component_dir), config_path,
                                            component_dir)
    if next(module.buffers(), None) is not None:
        # Buffers that checkpoints do not store (CLIP's position_ids) need real values: build again.
        with init_empty_weights(include_buffers=False):
            module = model_checks.construct(cls, config)
    return _assign(module, component_dir, allow_pickle, device, dtype, channels_last).eval().requires_grad_(False)


def build_module(cls, config, sd: dict, where):
    """A module of class `cls` with its parameters taken from the state dict `sd`."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = cls(config) if not hasattr(cls, "from_config") else cls.from_config(config)
    return fill(module, sd, where).eval().requires_grad_(False)


def vae_dtype(dtype, vae_config, device=None):
    """fp16 VAEs may overflow in decode (black images); configs that know it ask for fp32
    (`force_upcast`, diffusers' default). On CUDA the VAE still runs in fp16 first (half the
    memory traffic): Pipeline.decode's NaN guard redoes an overflowed decode in fp32 and then keeps
    that VAE in fp32 (SDXL's VAE, for one, overflows every time)."""
    import torch

    upcast = dtype == torch.float16 and vae_config.get("force_upcast", False)
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return torch.float32 if upcast and not on_cuda else dtype


def load_components(path: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None,
                    channels_last: bool = False) -> Components:
    """Load every component of the model at `path`: weights on `device`, in their stored dtype or,
    given `dtype`, cast to it tensor by tensor while reading (the VAE as `vae_dtype` says), with
    the UNet's and VAE's conv weights channels_last if asked."""
    UNet, VAE, _, _ = _classes()
    unet = _build(UNet, _read_json(path / "unet" / "config.json", "unet"), path / "unet", allow_pickle, device, dtype,
                  channels_last)
    vae_config = _read_json(path / "vae" / "config.json", "vae")
    vae = _build(VAE, vae_config, path / "vae", allow_pickle, device, vae_dtype(dtype, vae_config, device) if dtype else None,
                 channels_last)
    index = read_index(path)
    text = {}
    for te_name, tok_name in TEXT_PARTS:
        cls_name = text_encoder_class(index, path, te_name)
        if cls_name is not None:
            text[te_name] = _load_text_encoder(cls_name, path / te_name, allow_pickle, device, dtype)
            text[tok_name] = load_tokenizer(path / tok_name)
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=text.get("text_encoder"),
        tokenizer=text.get("tokenizer"),
        text_encoder_2=text.get("text_encoder_2"),
        tokenizer_2=text.get("tokenizer_2"),
        scheduler_config=read_scheduler_config(path / "scheduler" / "scheduler_config.json"),
        defaults=read_defaults(path),
        index={k: index[k] for k in INDEX_OPTIONS if k in index},
        upscaler=read_upscaler(path, index),
    )


def read_index(path: Path) -> dict:
    f = path / "model_index.json"
    return _read_json(f, "model index") if f.is_file() else {}


def text_encoder_class(index: dict, path: Path, name: str) -> str | None:
    """The class of text encoder `name` the model has, or None when it has none: as
    model_index.json says, else (older indexes) `text_encoder` always and `_2` if its folder exists."""
    entry = index.get(name)
    if isinstance(entry, list) and len(entry) == 2:
        cls_name = entry[1]
    elif name == "text_encoder" or (path / name).is_dir():
        cls_name = "CLIPTextModel" if name == "text_encoder" else "CLIPTextModelWithProjection"
    else:
        return None
    if cls_name is not None and cls_name not in TEXT_CLASSES:
        raise ModelError(f"{path}: text encoder class {cls_name!r} is not supported (supported: {', '.join(TEXT_CLASSES)})")
    return cls_name


def _load_text_encoder(cls_name: str, folder: Path, allow_pickle: bool, device: str, dtype=None):
    import transformers

    te_path = folder / "config.json"
    te_dict = _read_json(te_path, "text encoder")
    model_checks.check_config_numbers(te_dict, te_path)
    config = model_checks.guarded(lambda: transformers.CLIPTextConfig.from_dict(te_dict), te_path)
    return _build(getattr(transformers, cls_name), config, folder, allow_pickle, device, dtype)


def load_text_encoder(path: Path):
    """The first text encoder and tokenizer of the model folder `path`."""
    cls_name = text_encoder_class(read_index(path), path, "text_encoder") if path.is_dir() else None
    if cls_name is None:
        raise ModelError(f"{path} is not a model folder with a text encoder")
    return _load_text_encoder(cls_name, path / "text_encoder", False, "cpu"), load_tokenizer(path / "tokenizer")


def load_vae(path: Path, allow_pickle: bool = False):
    """A lone AutoencoderKL folder (config.json + weights), e.g. one made by train-vae."""
    _, VAE, _, _ = _classes()
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a VAE folder: config.json is missing")
    return _build(VAE, _read_json(path / "config.json", "vae"), path, allow_pickle, "cpu")


def load_tokenizer(path: Path):
    from transformers import CLIPTokenizer

    if not path.is_dir() or not any(path.iterdir()):
        raise ModelError(f"tokenizer folder {path} is missing or empty")
    try:
        return CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged tokenizer file fails in many types
        raise ModelError(f"cannot read the tokenizer in {path}: {model_checks.first_line(e)}") from None


def read_scheduler_config(path: Path) -> dict:
    return model_checks.check_scheduler_config(_read_json(path, "scheduler"), path)


def read_upscaler(path: Path, index: dict) -> dict:
    """The low-res scheduler config and max noise level diffusers keeps beside an upscaler's UNet."""
    f = path / "low_res_scheduler" / "scheduler_config.json"
    if "low_res_scheduler" not in index and not f.is_file():
        return {}
    low = read_scheduler_config(f) if f.is_file() else {"_class_name": "DDPMScheduler"}
    level = index.get("max_noise_level", 350)
    if not isinstance(level, int) or level < 0:
        raise ModelError(f"{path / 'model_index.json'}: max_noise_level must be a whole number >= 0, got {level!r}")
    return {"low_res_scheduler": low, "max_noise_level": level}


def read_defaults(path: Path) -> dict:
    f = path / DEFAULTS_FILE
    return model_checks.check_defaults(_read_json(f, "latentdiff defaults"), f) if f.is_file() else {}


def save_components(c: Components, out: Path, scheduler_class: str, extra_defaults: dict | None = None):
    """Write the diffusers layout with safetensors weights, loadable by StableDiffusionPipeline
    (SDXL: StableDiffusionXLPipeline, or its Img2Img pipeline for a refiner)."""
    quiet_libraries()
    out.mkdir(parents=True, exist_ok=True)
    c.unet.save_pretrained(out / "unet", safe_serialization=True)
    c.vae.save_pretrained(out / "vae", safe_serialization=True)
    for te_name, tok_name in TEXT_PARTS:
        if getattr(c, te_name) is not None:
            getattr(c, te_name).save_pretrained(out / te_name, safe_serialization=True)
            getattr(c, tok_name).save_pretrained(str(out / tok_name))
    as_umask_allows(*(out / name for name in ("unet", "vae", *(n for n, _ in TEXT_PARTS)) if (out / name).is_dir()))
    sched = {**c.scheduler_config, "_class_name": scheduler_class}
    low = {"_class_name": "DDPMScheduler", **c.upscaler["low_res_scheduler"]} if c.upscaler else None
    for name, config in (("scheduler", sched), ("low_res_scheduler", low)):
        if config is not None:
            (out / name).mkdir(exist_ok=True)
            (out / name / "scheduler_config.json").write_text(json.dumps(config, indent=2))
    (out / "model_index.json").write_text(json.dumps(model_index(c, scheduler_class), indent=2))
    defaults = {**c.defaults, **(extra_defaults or {})}
    if defaults:
        (out / DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2))


def model_index(c: Components, scheduler_class: str) -> dict:
    import diffusers

    # Here, not at the top: families/ imports torch, and preflight reads this module before torch loads.
    from latentdiff.families.registry import family_of

    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__, "scheduler": ["diffusers", scheduler_class]}
    return family_of(c).model_index(c, index)  # the family's pipeline class and arguments


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)
