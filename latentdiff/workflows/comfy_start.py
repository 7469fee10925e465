"""What ComfyUI's sampler nodes start from when a graph loads a picture (its nodes.py LoadImage,
LoadImageMask, VAEEncode, VAEEncodeForInpaint, SetLatentNoiseMask; read for behaviour, our code), and
the run's description `ComfyRun`: the chain of KSampler / KSamplerAdvanced stages, the picture, the mask
and how it is encoded. ComfyUI pastes nothing back: the image is the last stage's latents decoded.

- The picture: the file's first frame (ComfyUI batches the frames of a multi-frame file), EXIF-rotated, converted to RGB (an alpha channel dropped, not
  laid on white), 0..1; centre-cropped to a multiple of the VAE factor and encoded to the posterior's
  mode (ComfyUI's VAE samples nothing), scaled by the VAE's factor.
- The mask: LoadImage's is 1 - alpha (none: a 64x64 zero mask); LoadImageMask's a channel (alpha inverted).
- SetLatentNoiseMask: the mask as it is (continuous), resized bilinearly to the latents by KSampler.
- VAEEncodeForInpaint: the mask resized to the picture, grown by `grow_mask_by` pixels (a box
  convolution of the rounded mask), the masked pixels set to grey before encoding; the noise mask is
  the grown one, rounded.
- InpaintModelConditioning: the picture encoded as it is; the mask resized to the picture (bilinear),
  both cropped to a multiple of 8, the masked pixels grey and encoded for an inpainting UNet's extra
  channels with the mask; the mask is the noise mask too unless `noise_mask` is off.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

import latentdiff.config.params as params
from latentdiff.errors import UsageError
from latentdiff.images.comfy_latent import MAX_STAGES, RUN_KEYS
from latentdiff.images.read import BadImageError, open_image_data
from latentdiff.sampling import comfy

# VAEEncode (with SetLatentNoiseMask where masked), VAEEncodeForInpaint, InpaintModelConditioning
ENCODINGS = ("plain", "inpaint", "model")
CHANNELS = ("A", "R", "G", "B")
MAX_GROW = 64  # VAEEncodeForInpaint's grow_mask_by
MAX_FILE = 512 << 20  # bytes of a picture file read


@dataclass(frozen=True)
class ComfyRun:
    """A ComfyUI graph's sampling: its sampler stages in order (each continues the last one's latents:
    KSamplerAdvanced's base + refiner chain, or longer), and what the first starts from."""

    stages: tuple[comfy.Stage, ...]
    image: object = None  # a path or PIL image (LoadImage -> VAEEncode); None: an empty latent
    mask: object = None  # (path or PIL image, channel of CHANNELS): the noise mask's source
    encoding: str = "plain"
    grow_mask_by: int = 6
    noise_mask: bool = True  # InpaintModelConditioning's: the mask also the sampler's noise mask

    @classmethod
    def checked(cls, given: dict) -> "ComfyRun":
        """From the call's `comfy_graph` dict (images/comfy_graph.py makes it): each value checked."""
        if not isinstance(given, dict) or set(given) - {"stages", *RUN_KEYS}:
            raise UsageError(f"comfy_graph must be a dict of stages, {', '.join(RUN_KEYS)}")
        stages = given.get("stages")
        if not isinstance(stages, (list, tuple)) or not 1 <= len(stages) <= MAX_STAGES:
            raise UsageError(f"comfy_graph's stages must be a list of 1 to {MAX_STAGES} sampler stages")
        mask = given.get("mask")
        if mask is not None and not (isinstance(mask, (list, tuple)) and len(mask) == 2 and mask[1] in CHANNELS):
            raise UsageError(f"comfy_graph's mask must be [image, channel], the channel one of {', '.join(CHANNELS)}")
        encoding = params.choice(params.api_label, "comfy_graph encoding", given.get("encoding", "plain"), ENCODINGS)
        grow = params.whole(params.api_label, "grow_mask_by", given.get("grow_mask_by", 6), 0, MAX_GROW)
        noise_mask = params.flag(params.api_label, "comfy_graph noise_mask", given.get("noise_mask", True))
        if (mask is not None or encoding != "plain") and given.get("image") is None:
            raise UsageError("comfy_graph's mask and inpaint encoding need its image")
        run = cls(
            tuple(_stage(s) for s in stages), given.get("image"), mask and tuple(mask), encoding, grow, noise_mask
        )
        if run.encoding != "plain" and run.mask is None:
            raise UsageError(f"comfy_graph's {run.encoding} encoding needs a mask")
        return run

    def record(self) -> dict:
        """The run as the PNG records it (`checked` reads it back); a picture given as a PIL image: None."""
        named = lambda ref: ref if isinstance(ref, str) else None  # noqa: E731
        mask = None if self.mask is None else [named(self.mask[0]), self.mask[1]]
        stages = [dataclasses.asdict(st) for st in self.stages]
        given = {"image": named(self.image), "mask": mask, "encoding": self.encoding, "grow_mask_by": self.grow_mask_by}
        return {"stages": stages, **given, "noise_mask": self.noise_mask}


_STAGE_KEYS = ("sampler", "scheduler", "steps", "cfg", "seed", "denoise", "add_noise", "start", "end", "leftover")
_STAGE_KEYS += ("refiner",)


def _stage(given) -> comfy.Stage:
    api = params.api_label
    if not isinstance(given, dict) or set(given) - set(_STAGE_KEYS):
        raise UsageError(f"a comfy_graph stage must be a dict of {', '.join(_STAGE_KEYS)}")
    name = given.get("sampler")
    comfy.check(name if isinstance(name, str) else repr(name)[:40], "cpu")
    scheduler = params.choice(api, "comfy_graph scheduler", given.get("scheduler"), comfy.SCHEDULERS)
    steps = params.whole(api, "comfy_graph steps", given.get("steps"), 1, params.MAX_STEPS)
    cuts = [given.get(k) for k in ("start", "end")]
    cuts = [None if v is None else params.whole(api, "comfy_graph start/end", v, 0, 10_000) for v in cuts]
    denoise = params.real(api, "comfy_graph denoise", given.get("denoise", 1.0), 0.0, 1.0)
    switches = (("add_noise", True), ("leftover", False), ("refiner", False))
    flags = [params.flag(api, f"comfy_graph {k}", given.get(k, d)) for k, d in switches]
    cfg = params.guidance(api, given.get("cfg"))
    seed = params.whole(api, "comfy_graph seed", given.get("seed"), 0, 2**64 - 1)
    return comfy.Stage(given["sampler"], scheduler, steps, cfg, seed, float(denoise), flags[0], *cuts, *flags[1:])


def _frame(ref, what: str) -> Image.Image:
    """The picture's first frame, EXIF-rotated, in its own mode (images/read.py's checks: a broken,
    truncated or oversized file is one error)."""
    if isinstance(ref, Image.Image):
        return ImageOps.exif_transpose(ref)
    try:
        if not isinstance(ref, (str, os.PathLike)) or not os.path.isfile(ref):
            raise BadImageError("not a file (missing, or a folder or device)")
        if os.path.getsize(ref) > MAX_FILE:
            raise BadImageError(f"over {MAX_FILE >> 20} MiB")
        return open_image_data(Path(ref).read_bytes())
    except (BadImageError, OSError) as e:
        raise UsageError(f"the ComfyUI graph's {what} {str(ref)[:200]} is not usable: {e}") from None


def _eight_bit(im: Image.Image) -> Image.Image:
    return im.point(lambda v: v * (1 / 255)) if im.mode == "I" else im


def pixels(ref) -> torch.Tensor:
    """LoadImage's IMAGE: (1, H, W, 3) RGB in 0..1."""
    rgb = _eight_bit(_frame(ref, "image")).convert("RGB")
    return torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None]


def mask(ref, channel: str) -> torch.Tensor:
    """LoadImage's MASK (channel "A": 1 - alpha, none: 64x64 zeros) or LoadImageMask's channel: (1, H, W)."""
    im = _frame(ref, "mask")
    if channel != "A" or (im.mode == "P" and "transparency" in im.info):
        im = _eight_bit(im).convert("RGBA") if im.getbands() != ("R", "G", "B", "A") else im
    if channel not in im.getbands():
        return torch.zeros((1, 64, 64))
    m = torch.from_numpy(np.array(im.getchannel(channel)).astype(np.float32) / 255.0)[None]
    return 1.0 - m if channel == "A" else m


def crop(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, H, W, ...) centre-cropped to a multiple of `factor` (ComfyUI's vae_encode_crop_pixels)."""
    h, w = x.shape[1] // factor * factor, x.shape[2] // factor * factor
    top, left = (x.shape[1] % factor) // 2, (x.shape[2] % factor) // 2
    return x[:, top : top + h, left : left + w]


@torch.no_grad()
def encode(vae, image: torch.Tensor, factor: int) -> torch.Tensor:
    """VAEEncode: (1, H, W, 3) in 0..1 -> the posterior's mode times the VAE's scaling factor."""
    x = crop(image, factor).movedim(-1, 1) * 2.0 - 1.0
    dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
    return dist.mode().float() * vae.config.scaling_factor


def for_inpaint(image: torch.Tensor, m: torch.Tensor, grow: int, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VAEEncodeForInpaint's (picture with the rounded mask grey, noise mask (1, 1, H, W) grown and rounded)."""
    h, w = image.shape[1] // factor * factor, image.shape[2] // factor * factor
    m = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=image.shape[1:3], mode="bilinear")
    top, left = (image.shape[1] % factor) // 2, (image.shape[2] % factor) // 2
    image, m = image[:, top : top + h, left : left + w].clone(), m[:, :, top : top + h, left : left + w]
    grown = m
    if grow:
        pad = math.ceil((grow - 1) / 2)
        grown = torch.clamp(F.conv2d(m.round(), torch.ones((1, 1, grow, grow)), padding=pad), 0, 1)
    return _grey(image, m), grown[:, :, :h, :w].round()


def _grey(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(1, H, W, 3) pixels with those under the rounded mask (1, 1, H, W) set to 0.5."""
    return (image - 0.5) * (1.0 - m.round()).squeeze(1)[..., None] + 0.5


def model_conditioning(vae, image: torch.Tensor, m: torch.Tensor, factor: int, noise_mask: bool):
    """InpaintModelConditioning: (the picture's latent, the noise mask or None, (the mask cropped as the
    picture, the latent of the picture cropped to a multiple of 8 with the rounded mask grey)) for an
    inpainting UNet's extra channels."""
    m = crop(F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=image.shape[1:3], mode="bilinear").movedim(1, -1), 8)
    m = m.movedim(-1, 1)
    masked = encode(vae, _grey(crop(image, 8), m), factor)
    return encode(vae, image, factor), m if noise_mask else None, (m, masked)


def noise_mask(m: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """KSampler's latent mask: the noise mask resized bilinearly to the latents (B, C, h, w)."""
    m = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=shape[2:], mode="bilinear")
    return m.repeat(1, shape[1], 1, 1)[:, : shape[1]].repeat(shape[0] // m.shape[0], 1, 1, 1)


def start(vae, run: ComfyRun, factor: int):
    """(the first stage's latent (1, C, h, w), its noise mask at the picture's size or None, what an
    inpainting UNet sees beside its input: (mask, latent) or None where that is the noise mask and the
    start latent); an empty latent: (None, None, None)."""
    if run.image is None:
        return None, None, None
    image = pixels(run.image)
    m = None if run.mask is None else mask(*run.mask)
    if run.encoding == "model":
        return model_conditioning(vae, image, m, factor, run.noise_mask)
    if run.encoding == "inpaint":
        image, m = for_inpaint(image, m, run.grow_mask_by, factor)
    return encode(vae, image, factor), m, None


def size_of(ref, factor: int) -> tuple[int, int]:
    """(width, height) a graph starting from picture `ref` runs at: its size cut to the factor."""
    im = _frame(ref, "image")
    return im.width // factor * factor, im.height // factor * factor
