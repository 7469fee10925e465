"""Load and save the components of a diffusers-format model.

We read configs with diffusers/transformers, build each module with its parameters on the
meta device (no random init of weights we are about to overwrite), and assign tensors read
by `weights.py`, so the safetensors-only policy and clear errors hold for every file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import model_checks
from .errors import ModelError
from .weights import load_component_state

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
DEFAULTS_FILE = "latentdiff.json"  # our recommended settings; diffusers ignores the file
# Old CLIP checkpoints carry position_ids as a persistent buffer; newer code makes it non-persistent.
_IGNORABLE_UNEXPECTED = ("text_model.embeddings.position_ids",)


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    defaults: dict


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
    from .resources import allocation_errors

    with allocation_errors(f"loading the weights in {component_dir}", "free some memory, or load in fp16/bf16"):
        sd = load_component_state(component_dir, allow_pickle, device="cpu" if device == "mps" else device,
                                  dtype=dtype, channels_last=channels_last)
    try:
        result = module.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(f"weights in {component_dir} do not fit its config: {first[-1].strip()}") from None
    unexpected = [k for k in result.unexpected_keys if k not in _IGNORABLE_UNEXPECTED]
    if result.missing_keys or unexpected:
        keys = (result.missing_keys or unexpected)[:3]
        kind = "lack" if result.missing_keys else "have unexpected"
        raise ModelError(f"weights in {component_dir} {kind} tensors such as {', '.join(keys)}")
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


def vae_dtype(dtype, vae_config):
    """fp16 VAEs overflow in decode (black images); configs that know it ask for fp32."""
    import torch

    return torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast", False) else dtype


def load_components(path: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None,
                    channels_last: bool = False) -> Components:
    """Load every component of the model at `path`: weights on `device`, in their stored dtype or,
    given `dtype`, cast to it tensor by tensor while reading (the VAE as `vae_dtype` says), with
    the UNet's and VAE's conv weights channels_last if asked."""
    UNet, VAE, TextModel, TextConfig = _classes()
    unet = _build(UNet, _read_json(path / "unet" / "config.json", "unet"), path / "unet", allow_pickle, device, dtype,
                  channels_last)
    vae_config = _read_json(path / "vae" / "config.json", "vae")
    vae = _build(VAE, vae_config, path / "vae", allow_pickle, device, vae_dtype(dtype, vae_config) if dtype else None,
                 channels_last)
    te_path = path / "text_encoder" / "config.json"
    te_dict = _read_json(te_path, "text encoder")
    model_checks.check_config_numbers(te_dict, te_path)
    te_config = model_checks.guarded(lambda: TextConfig.from_dict(te_dict), te_path)
    text_encoder = _build(TextModel, te_config, path / "text_encoder", allow_pickle, device, dtype)
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(path / "tokenizer"),
        scheduler_config=read_scheduler_config(path / "scheduler" / "scheduler_config.json"),
        defaults=read_defaults(path),
    )


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


def read_defaults(path: Path) -> dict:
    f = path / DEFAULTS_FILE
    return model_checks.check_defaults(_read_json(f, "latentdiff defaults"), f) if f.is_file() else {}


def save_components(c: Components, out: Path, scheduler_class: str, extra_defaults: dict | None = None):
    """Write the diffusers layout with safetensors weights, loadable by StableDiffusionPipeline."""
    import diffusers

    quiet_libraries()
    out.mkdir(parents=True, exist_ok=True)
    c.unet.save_pretrained(out / "unet", safe_serialization=True)
    c.vae.save_pretrained(out / "vae", safe_serialization=True)
    c.text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    c.tokenizer.save_pretrained(str(out / "tokenizer"))
    (out / "scheduler").mkdir(exist_ok=True)
    sched = {**c.scheduler_config, "_class_name": scheduler_class}
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__}
    index["scheduler"] = ["diffusers", scheduler_class]
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    defaults = {**c.defaults, **(extra_defaults or {})}
    if defaults:
        (out / DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2))


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)
