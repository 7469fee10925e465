"""IP-Adapter image prompts: a picture (or a face embedding, FaceID) steering the image beside the
text, as diffusers' `load_ip_adapter` + `ip_adapter_image` do.

Before the loop every prompt is checked (`image_prompt_slots`): its adapter file read once per
pipeline (formats/ip_adapter.py) and refused if made for another model family, its pictures read,
and its image embeddings computed as diffusers' `prepare_ip_adapter_image_embeds` computes them
(the unconditional side: the encoder of a black image, `zeros_like`, for Plus/Full-Face; zeros for
base and FaceID). Each prompt is one adapter slot with its own scale (diffusers'
`set_ip_adapter_scale` with one scale per adapter; the same file twice is loaded twice, as a list
to `load_ip_adapter` is); several pictures in one prompt give their tokens side by side, as
diffusers does for a list per adapter. In the loop the embeddings are the model call's
`ImageTokens`. `adapters_installed` puts the slots into the UNet (diffusers'
`_load_ip_adapter_weights`: its IP attention processors and `encoder_hid_proj`) for the call and
restores the UNet's own afterwards, so a later call without image prompts gives the base pixels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentdiff.config.image_prompt_flags import MAX_PROMPTS, MAX_SCALE
from latentdiff.errors import UsageError
from latentdiff.formats.ip_adapter import AdapterFile, family_label, read_adapter
from latentdiff.sampling.model_call import ImageTokens
from latentdiff.workflows.image_encoder import encoder_for, face_embeddings, prompt_images
from latentdiff.workflows.image_prompt_record import checked_files, prompt_record


@dataclass(frozen=True)
class ImagePrompt:
    """One image prompt as a caller gives it. `image`: a path or PIL image, or a list of them (their
    tokens side by side); for a FaceID adapter, face embeddings instead: a `.npy` / `.safetensors`
    file or a tensor/array of shape (512,) or (N, 512). `scale`: its weight, 0 to 2 (0 leaves the
    picture as it is without it). `adapter`: an IP-Adapter file (or one read by
    `formats.ip_adapter.read_adapter`) for this prompt alone (None: the call's `ip_adapter`)."""

    image: Any
    scale: float = 1.0
    adapter: Any = None


@dataclass(frozen=True)
class Slot:
    """A checked image prompt: its adapter, its scale and its image embeddings (1, n, ...) for the
    conditional and the unconditional rows."""

    adapter: AdapterFile
    scale: float
    embeds: torch.Tensor
    negative: torch.Tensor
    record: dict = field(default_factory=dict)  # what the image's metadata says of it (images/record.py)

    def tokens(self, rows: int, negative: bool = False) -> ImageTokens:
        """The model call's tokens for `rows` images (diffusers repeats them per image)."""
        return ImageTokens(torch.cat([self.negative if negative else self.embeds] * rows))


def image_prompt_slots(pipe, prompts, ip_adapter=None, image_encoder=None) -> tuple[Slot, ...]:
    """The checked slots of a call, every prompt checked before the first is encoded (a UsageError
    names the first bad one)."""
    if prompts is None:
        return ()
    if isinstance(prompts, ImagePrompt):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, ImagePrompt) for p in prompts):
        raise UsageError("image_prompts must be a list of latentdiff.ImagePrompt")
    if len(prompts) > MAX_PROMPTS:
        raise UsageError(f"{len(prompts)} image prompts given; at most {MAX_PROMPTS} are supported")
    checked = [_check(pipe, p, f"image_prompts[{k}]", ip_adapter, image_encoder) for k, p in enumerate(prompts)]
    with torch.no_grad():
        return tuple(_slot(pipe, *c) for c in checked)


def _check(pipe, p: ImagePrompt, name: str, ip_adapter, image_encoder):
    scale = p.scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= MAX_SCALE:
        raise UsageError(f"{name}.scale must be a number from 0 to {MAX_SCALE}, got {scale!r}")
    adapter = _adapter(pipe, p.adapter if p.adapter is not None else ip_adapter, name)
    if adapter.kind == "faceid":
        faces = face_embeddings(p.image, adapter.embed_dim, name)
        return adapter, float(scale), faces, None, prompt_record(p.image, faces, adapter, scale, None)
    images = prompt_images(p.image, name)
    encoder = encoder_for(pipe, adapter, image_encoder, name)
    return adapter, float(scale), images, encoder, prompt_record(p.image, images, adapter, scale, encoder[2])


def _adapter(pipe, path, name: str) -> AdapterFile:
    """The IP-Adapter file `path`, read once per pipeline, made for this pipeline's family."""
    if path is None:
        raise UsageError(f"{name} needs an IP-Adapter: pass ip_adapter=FILE (an ip-adapter_*.safetensors)")
    if isinstance(path, AdapterFile):
        adapter = path
    elif not isinstance(path, (str, Path)):
        raise UsageError(f"{name}: ip_adapter must be the path of an IP-Adapter file")
    else:
        cache = pipe.__dict__.setdefault("_ip_adapters", {})
        key = Path(path).resolve()
        if key not in cache:
            cache[key] = read_adapter(Path(path), getattr(pipe, "allow_pickle", False), "ip_adapter")
        adapter = cache[key]
    unet = pipe.components.unet
    layers = sum(not n.endswith("attn1.processor") for n in unet.attn_processors)
    width = unet.config.cross_attention_dim
    if adapter.width != width or adapter.layers != layers:
        raise UsageError(
            f"{name}: {adapter.path.name} is an IP-Adapter for {adapter.family}, {adapter.layers} cross-attention "
            f"layers; this model ({pipe.family.label}) has {family_label(width)}, {layers} cross-attention layers"
        )
    return adapter


def _slot(pipe, adapter: AdapterFile, scale: float, images, encoder, record: dict) -> Slot:
    """The prompt's embeddings, computed as diffusers' prepare_ip_adapter_image_embeds does."""
    if encoder is None:  # FaceID: the face embeddings are the image embeddings; zeros the negative
        embeds = images[None].to(pipe.device, pipe.dtype)
        return Slot(adapter, scale, embeds, torch.zeros_like(embeds), record)
    hidden = adapter.kind != "base"
    embeds, negative = _host(image_encoder=encoder[0], feature_extractor=encoder[1]).encode_image(
        images, pipe.device, 1, hidden
    )
    return Slot(adapter, scale, embeds[None], negative[None], record)


def _host(**parts):
    """diffusers' own IP-Adapter methods, on an object holding just what they read from `self`."""
    # diffusers is imported by then; here, not at the top, to keep its pipelines out of start-up
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.ip_adapter import IPAdapterMixin

    class Host:
        encode_image = StableDiffusionPipeline.encode_image
        set_ip_adapter_scale = IPAdapterMixin.set_ip_adapter_scale

        def __init__(self, **kw):
            self.__dict__.update(kw)

    return Host(**parts)


@contextlib.contextmanager
def adapters_installed(pipe, slots: tuple[Slot, ...]):
    """The UNet with the slots' IP-Adapters loaded as diffusers loads them, each at its scale, for
    the time of the block; its own attention processors and encoder_hid_proj back afterwards."""
    restore(pipe)  # a previous call's, if its generator was never finished or closed
    if not slots:
        yield
        return
    unet, mine = pipe.components.unet, object()
    saved = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
    pipe.__dict__["_ip_saved"] = (mine, saved)
    try:
        try:
            unet._load_ip_adapter_weights([s.adapter.state for s in slots])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UsageError(f"ip_adapter does not fit this model's UNet: {str(e).splitlines()[0]}") from None
        _host(unet=unet).set_ip_adapter_scale([s.scale for s in slots])
        _faceid_loras(unet, [s.adapter.state for s in slots])
        yield
    finally:
        restore(pipe, mine)  # only its own: an abandoned call closed later must not undo a newer one's


def restore(pipe, owner=None) -> None:
    """Put back the UNet's attention processors and encoder_hid_proj saved by `adapters_installed`
    (by the call `owner` only, when given)."""
    held = pipe.__dict__.get("_ip_saved")
    if held is None or (owner is not None and held[0] is not owner):
        return
    del pipe.__dict__["_ip_saved"]
    unet = pipe.components.unet
    if getattr(unet, "peft_config", None):
        unet.unload_lora()  # the FaceID LoRA layers: the UNet's own Linear layers back
    processors, unet.encoder_hid_proj, unet.config.encoder_hid_dim_type = held[1]
    unet.set_attn_processor(dict(processors))


def _faceid_loras(unet, states: list) -> None:
    """The LoRA weights FaceID files carry, into the UNet's attention at weight 1, as diffusers'
    load_ip_adapter loads them (through PEFT; `restore` takes them out again)."""
    loras = unet._load_ip_adapter_loras(states)
    if not loras:
        return
    # diffusers is imported by then; here, not at the top, to keep its pipelines out of start-up
    from diffusers import StableDiffusionPipeline

    for k, lora in loras.items():
        state, alphas, meta = StableDiffusionPipeline.lora_state_dict(lora, return_lora_metadata=True)
        StableDiffusionPipeline.load_lora_into_unet(state, alphas, unet, adapter_name=f"faceid_{k}", metadata=meta)
        unet.set_adapters([f"faceid_{k}"], weights=[1.0])  # one at a time: diffusers leaves the last active


def slot_tokens(slots: tuple[Slot, ...], rows: int) -> tuple[tuple, tuple]:
    """(conditional, unconditional) ImageTokens of the slots for `rows` images."""
    return tuple(s.tokens(rows) for s in slots), tuple(s.tokens(rows, True) for s in slots)


def from_records(records: list[dict], allow_pickle: bool = False) -> tuple[list[ImagePrompt], str | None]:
    """(`ImagePrompt`s, the image-encoder folder) from the CLI's checked records
    (config/image_prompt_flags.image_prompts), their files checked and adapters read first
    (workflows/image_prompt_record.checked_files)."""
    checked, encoder = checked_files(records, allow_pickle)
    return [ImagePrompt(image, scale, adapter) for image, scale, adapter in checked], encoder
