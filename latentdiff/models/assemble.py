"""Checked configs -> modules with their weights (the last stops of loading).

Each module is first built on the meta device (nothing allocated), must not describe more values
than its folder's weights hold (so a config cannot make us allocate more than the files' size),
and is then filled with the tensors models/weights.py reads, cast to the compute dtype as they are
read, so the safetensors-only policy and clear errors hold for every file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from latentdiff.errors import ModelError
from latentdiff.families.pixel_space import PixelSpace, is_pixel
from latentdiff.models.checks import diffusers_class, guarded
from latentdiff.models.components import Components
from latentdiff.models.configs import (
    TEXT_PARTS,
    TOKENIZER_CLASSES,
    ModelConfigs,
    check_numbers_where_numbers,
    component_config,
    diffusers_config,
    read_configs,
    read_index,
    text_config,
    text_encoder_class,
)
from latentdiff.models.files import first_line, is_present
from latentdiff.models.index import index_options
from latentdiff.models.unclip_parts import PRIOR_FOLDERS, check_prior_folder, has_unclip, load_prior_parts, load_unclip
from latentdiff.models.weights import assign, fill, stored_values
from latentdiff.runtime.libraries import quiet_libraries
from latentdiff.runtime.reading import check_regular, is_special


def load_components(
    path: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None, channels_last: bool = False
) -> Components:
    """Every component of the model folder `path` (see `build`; the VAE in the dtype `vae_dtype` says)."""
    from latentdiff.runtime.placement import vae_dtype  # imports torch, as build does

    cfgs = read_configs(path)
    return build(
        cfgs, allow_pickle, device, dtype, vae_dtype(dtype, cfgs.vae, device) if dtype else None, channels_last
    )


def build(
    cfgs: ModelConfigs,
    allow_pickle: bool = False,
    device: str = "cpu",
    dtype=None,
    vae_dtype=None,
    channels_last: bool = False,
    denoiser: bool = True,
) -> Components:
    """The components `cfgs` describe: weights on `device`, in their stored dtype or, given `dtype`
    (`vae_dtype` for the VAE), cast to it tensor by tensor while reading, with the UNet's and VAE's
    conv weights channels_last if asked; without `denoiser`, all but the UNet or transformer (None:
    a transformer file brings its own)."""
    import diffusers
    import transformers

    quiet_libraries()
    path = cfgs.path
    load = dict(allow_pickle=allow_pickle, device=device)
    cls = getattr(diffusers, diffusers_class(cfgs.unet, cfgs.denoiser))
    unet = None
    if denoiser:
        unet = _build(
            cls, cfgs.unet, path / cfgs.denoiser, cfgs.values["unet"], **load, dtype=dtype, channels_last=channels_last
        )
    vae_cls = None if is_pixel(cfgs.vae) else getattr(diffusers, diffusers_class(cfgs.vae, "vae"))
    vae_args = (cfgs.vae, path / "vae", cfgs.values.get("vae"))
    vae = (
        PixelSpace()
        if vae_cls is None
        else _build(vae_cls, *vae_args, **load, dtype=vae_dtype, channels_last=channels_last)
    )
    text = {}
    for te_name, tok_name in TEXT_PARTS:
        if te_name in cfgs.text:
            cls_name, config = cfgs.text[te_name]
            text[te_name] = _build(
                getattr(transformers, cls_name), config, path / te_name, cfgs.values[te_name], **load, dtype=dtype
            )
            text[tok_name] = load_tokenizer(path / tok_name, tokenizer_class(cfgs.index, tok_name))
    return Components(
        unet=unet,
        vae=vae,
        text_encoder=text.get("text_encoder"),
        tokenizer=text.get("tokenizer"),
        text_encoder_2=text.get("text_encoder_2"),
        tokenizer_2=text.get("tokenizer_2"),
        text_encoder_3=text.get("text_encoder_3"),
        tokenizer_3=text.get("tokenizer_3"),
        scheduler_config=cfgs.scheduler,
        defaults=cfgs.defaults,
        index=index_options(cfgs),
        upscaler=cfgs.upscaler,
        unclip=_unclip(cfgs, load, dtype),
    )


def _unclip(cfgs: ModelConfigs, load: dict, dtype) -> dict:
    """A Stable unCLIP model's parts beside its UNet (models/unclip_parts.py), built as the rest are."""
    path = cfgs.path
    if not has_unclip(path, cfgs.index):
        return {}

    def module(cls, config, name: str):
        return _build(cls, config, path / name, stored_values(path / name), **load, dtype=dtype)

    def encoder(folder: Path):
        return load_image_encoder(folder, load["allow_pickle"], load["device"], dtype)

    return load_unclip(path, cfgs.index, module, encoder, load_tokenizer)


def load_prior(path: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None) -> dict:
    """A Kandinsky 2.2 prior folder (KandinskyV22PriorPipeline's layout) or a Karlo UnCLIPPipeline
    folder's prior as the prior parts of Components.unclip (prior, prior_text_encoder, prior_tokenizer,
    prior_scheduler)."""

    def module(cls, config, name: str):
        return _build(cls, config, path / name, stored_values(path / name), allow_pickle, device, dtype)

    return load_prior_parts(path, module, load_tokenizer, PRIOR_FOLDERS[check_prior_folder(path, "prior")])


def _build(
    cls,
    config,
    component_dir: Path,
    stored: tuple,
    allow_pickle: bool,
    device: str,
    dtype=None,
    channels_last=False,
    config_name: str = "config.json",
):
    """Check the config against the weights on the meta device, then fill the module from disk."""
    from accelerate import init_empty_weights

    config_path = component_dir / config_name
    module = build_on_meta(cls, config, config_path)
    check_size_against_weights(module, stored[0], config_path, component_dir)
    if next(module.buffers(), None) is not None or _plain_tensors(module):
        # Buffers that checkpoints do not store (CLIP's position_ids) and tensors kept as plain
        # attributes (Qwen-Image's rotary frequencies) need real values: build again.
        with init_empty_weights(include_buffers=False):
            module = construct(cls, config)
    dtype = fp32_kept(cls, dtype)
    return assign(module, component_dir, allow_pickle, device, dtype, channels_last).eval().requires_grad_(False)


def _plain_tensors(module) -> bool:
    """Whether a submodule keeps a tensor as a plain attribute (neither parameter nor buffer)."""
    import torch

    return any(isinstance(v, torch.Tensor) for m in module.modules() for v in vars(m).values())


def fp32_kept(cls, dtype):
    """`dtype`, or where `cls` keeps layers in fp32 under fp16 (runtime.placement.fp32_layers: T5's
    `wo`), a function of the tensor's name giving fp32 for those, as from_pretrained reads them."""
    import torch

    from latentdiff.runtime.placement import fp32_layers, in_layers  # imports torch, as build does

    layers = fp32_layers(cls, dtype)
    return (lambda name: torch.float32 if in_layers(name, layers) else dtype) if layers else dtype


def build_on_meta(cls, config, path: Path):
    """Build `cls` from `config` with every tensor on the meta device (nothing is allocated)."""
    import torch

    def make():
        # A bad config's warnings (zero-element tensors, deprecated keys) would break our one line.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return construct(cls, config)

    return guarded(make, path)


def construct(cls, config):
    return cls(config) if not hasattr(cls, "from_config") else cls.from_config(config)


def check_size_against_weights(module, stored: int | None, path: Path, weights_dir: Path) -> None:
    """The module a config describes may not need more values than the folder's weights hold."""
    if stored is None:
        return
    wanted = sum(p.numel() for p in module.parameters())
    # Buffers a checkpoint need not store (CLIP's position_ids) are small next to the weights.
    wanted_buffers = sum(b.numel() for b in module.buffers())
    if wanted > stored or wanted_buffers > max(stored, 1 << 20):
        raise ModelError(
            f"{path} describes a model of {wanted + wanted_buffers:,} values, but the weights in {weights_dir} "
            f"hold {stored:,}; the config does not belong to these weights"
        )


def build_module(cls, config, sd: dict, where):
    """A module of class `cls` with its parameters taken from the state dict `sd`."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = construct(cls, config)
    return fill(module, sd, where).eval().requires_grad_(False)


# ---- single components ------------------------------------------------------------------------
def load_text_encoder(path: Path):
    """The first text encoder and tokenizer of the model folder `path`."""
    import transformers

    cls_name = text_encoder_class(read_index(path), path, "text_encoder") if path.is_dir() else None
    if cls_name is None:
        raise ModelError(f"{path} is not a model folder with a text encoder")
    folder = path / "text_encoder"
    config = text_config(folder / "config.json")
    encoder = _build(getattr(transformers, cls_name), config, folder, stored_values(folder), False, "cpu")
    return encoder, load_tokenizer(path / "tokenizer")


def load_image_encoder(path: Path, allow_pickle: bool = False, device: str = "cpu", dtype=None):
    """A CLIP vision encoder folder (config.json + weights) as CLIPVisionModelWithProjection, the
    image encoder of IP-Adapters (h94/IP-Adapter's `image_encoder/`)."""
    import transformers  # seconds to import: only when an image encoder is wanted

    quiet_libraries()
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{path} is not an image encoder folder: config.json is missing")
    values = component_config(config_path, "image encoder")
    check_numbers_where_numbers(values, transformers.CLIPVisionConfig(), config_path)
    config = guarded(lambda: transformers.CLIPVisionConfig.from_dict(values), config_path)
    cls = transformers.CLIPVisionModelWithProjection
    return _build(cls, config, path, stored_values(path), allow_pickle, device, dtype)


def load_vae(path: Path, allow_pickle: bool = False):
    """A lone AutoencoderKL folder (config.json + weights), e.g. one made by train-vae."""
    from diffusers import AutoencoderKL

    quiet_libraries()
    if not is_present(path / "config.json", "VAE config"):
        raise ModelError(f"{path} is not a VAE folder: config.json is missing")
    return _build(
        AutoencoderKL, diffusers_config(path / "config.json", "vae"), path, stored_values(path), allow_pickle, "cpu"
    )


_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def tokenizer_class(index: dict, name: str) -> str:
    """The tokenizer class model_index.json names for `name` (CLIPTokenizer where it names none)."""
    entry = index.get(name)
    cls_name = entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[1] else "CLIPTokenizer"
    if cls_name not in TOKENIZER_CLASSES:
        raise ModelError(f"tokenizer class {cls_name!r} is not supported (supported: {', '.join(TOKENIZER_CLASSES)})")
    return cls_name


def load_tokenizer(path: Path, cls_name: str = "CLIPTokenizer"):
    import transformers

    if not path.is_dir() or not any(path.iterdir()):
        raise ModelError(f"tokenizer folder {path} is missing or empty")
    for f in path.iterdir():  # transformers opens what it finds: a FIFO would block it
        if is_special(f) or f.name in _VOCAB_FILES:
            check_regular(f, "tokenizer file", ModelError)
    # Without them transformers builds a tokenizer of 2 tokens that makes every prompt padding
    # (found by the fuzzing: tokenizer.json a folder); the files are checked as regular above.
    if not (
        (path / "tokenizer.json").exists()
        or (path / "spiece.model").exists()  # T5's sentencepiece model
        or all((path / n).exists() for n in ("vocab.json", "merges.txt"))
    ):
        raise ModelError(f"tokenizer folder {path} holds neither tokenizer.json nor vocab.json and merges.txt")
    try:
        return getattr(transformers, cls_name).from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged tokenizer file fails in many types
        raise ModelError(f"cannot read the tokenizer in {path}: {first_line(e)}") from None
