"""Where the denoising loop starts: pure noise, or an image noised to the strength's timestep,
plus what inpainting adds (a known region blended back each step, or an inpainting UNet's mask
channels).

Random numbers are drawn as diffusers' img2img and inpaint pipelines draw them, from image k's
own generator (seed + k) in the same order: the init image's VAE sample, the noise, then (with a
mask) the masked image's VAE sample. So on the same weights the results match diffusers', and
image k does not depend on the batch it was made in. (diffusers, given a list of generators,
encodes the masked image of a one-image batch with the first generator only; we use each
image's own, which matches diffusers called image by image.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.errors import UsageError
from latentdiff.runtime.offload import execution_device
from latentdiff.sampling.loop import add_noise, draw_noise, start_step
from latentdiff.sampling.model_call import ImageChannels, Inputs


@dataclass
class Start:
    latents: torch.Tensor  # (B, 4, h, w) fp32
    generators: list[torch.Generator]
    start: int = 0
    channels: ImageChannels | None = None  # an inpainting UNet's mask and masked-image latents
    blend: Callable | None = None

    def inputs(self, context, residuals: tuple = (), tokens: tuple = ()) -> Inputs | None:
        """The model call's inputs for `context` (None stays None: no negatives)."""
        return None if context is None else Inputs(context, self.channels, residuals, tokens)


def to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1], computed as diffusers' VaeImageProcessor does."""
    a = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None] * 2.0 - 1.0


def mask_tensor(mask) -> torch.Tensor:
    """PIL L -> (1, 1, H, W) of 0/1: white (>= 50%) repaints."""
    a = np.asarray(mask.convert("L")).astype(np.float32) / 255.0
    return (torch.from_numpy(a)[None, None] >= 0.5).float()


@torch.no_grad()
def encode_sampled(vae, pixels: torch.Tensor, generators) -> torch.Tensor:
    """One VAE posterior sample per generator of the same picture, shifted and scaled as the
    VAE's config says: (B, C, h, w) fp32."""
    dist = vae.encode(pixels.to(execution_device(vae), vae.dtype)).latent_dist
    return scaled(vae, torch.cat([dist.sample(generator=g) for g in generators]).float())


def scaled(vae, z: torch.Tensor) -> torch.Tensor:
    """The VAE's latents shifted and scaled as its config says (the loop's latents)."""
    shift = vae.config.get("shift_factor")  # Flux's VAE centres its latents; SD's has none
    return (z if shift is None else z - shift) * vae.config.scaling_factor


@torch.no_grad()
def reference_start(vae, pixels, mask, strength: float, noise: torch.Tensor, gens) -> Start:
    """A start from noise beside the reference image's latents (the VAE's mode, no draw: as
    FluxKontextPipeline encodes it), which the model call reads as extra tokens (Flux Kontext)."""
    if pixels is None or mask is not None or strength < 1.0:
        raise UsageError(
            "a Kontext model edits the image it is given: pass it as the init image (--init-image), "
            "without a mask or a strength below 1"
        )
    ref = scaled(vae, vae.encode(pixels.to(execution_device(vae), vae.dtype)).latent_dist.mode().float()).to(
        noise.device
    )
    return Start(noise, gens, 0, channels=ImageChannels(ref.expand(len(gens), -1, -1, -1)))


def prepare(
    pipe,
    sched,
    seeds: list[int],
    steps: int,
    size: tuple[int, int],
    image=None,
    mask=None,
    strength: float = 1.0,
    init_latents: torch.Tensor | None = None,
    comfy=None,
    generators: list | None = None,
) -> Start:
    """The start of a run: `image` (PIL) or `init_latents` (B, 4, h, w) noised to `strength`,
    or noise when neither is given; with `mask` (PIL L), an inpainting start. `comfy` (a
    sampling.noise.ComfyNoise; text to image only): ComfyUI's noise instead of each image's own.
    `generators`: the images' generators where a first stage has drawn from them already (Stable unCLIP)."""
    c = pipe.components
    f = pipe.scale_factor
    vae = c.vae
    channels = vae.config.latent_channels
    shape = (channels, size[1] // f, size[0] // f)
    gens = generators or [torch.Generator("cpu").manual_seed(s) for s in seeds]
    pipe.family.check_start(c)
    nine = pipe.family.inpainting(c)
    if nine and mask is None:  # an inpainting model asked for img2img or text: repaint everything
        from PIL import Image

        mask = Image.new("L", size, 255)
    inpaint = mask is not None
    pixels = to_tensor(image) if image is not None else (torch.zeros(1, 3, size[1], size[0]) if nine else None)
    device = pipe.device
    if pipe.family.image_is_reference(c):  # Kontext: the image is looked at, not started from
        return reference_start(vae, pixels, mask, strength, draw_noise(shape, gens).to(device), gens)
    from_noise = pixels is None and init_latents is None
    start = 0 if from_noise else start_step(sched, steps, strength, pipe.family.strength_steps(steps, strength))
    full = from_noise or (inpaint and strength >= 1.0)  # diffusers' inpaint starts from pure noise at strength 1
    if init_latents is None and pixels is not None and not (nine and full and not pipe.family.encodes_full_start(c)):
        init_latents = encode_sampled(vae, pixels, gens)
    noise = (draw_noise(shape, gens) if comfy is None else comfy.initial(shape)).to(device)  # drawn on the CPU
    if comfy is not None:
        gens = comfy.step_generators(device)
    if full:
        latents = noise * getattr(sched, "init_noise_sigma", 1.0)  # flow matching starts at the noise itself
    else:
        init_latents = init_latents.to(device)
        latents = add_noise(sched, init_latents, noise, sched.timesteps[start : start + 1].repeat(len(seeds)))
    if not inpaint:
        return Start(latents, gens, start)
    m = mask_tensor(mask)
    # An ordinary UNet does not use these latents, but diffusers encodes them (drawing from the
    # generators) all the same; so do we, so that ancestral steps draw the same noise after.
    masked = encode_sampled(vae, pixels * (m < 0.5), gens).to(device)
    if nine:
        return Start(latents, gens, start, channels=ImageChannels(pipe.family.mask_channels(c, m.to(device), masked)))
    small = F.interpolate(m, size=shape[1:]).to(device)  # (1, 1, h, w), nearest as diffusers
    return Start(latents, gens, start, blend=KnownRegion(init_latents.to(device), noise, small, sched, start))


class KnownRegion:
    """Inpainting with an ordinary model (RePaint-style blending, as diffusers does): after each
    step the region outside the mask is replaced by the init latents noised to the next timestep."""

    def __init__(self, init: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, scheduler, start: int):
        self.init, self.noise, self.mask = init, noise, mask
        self.scheduler, self.timesteps = scheduler, scheduler.timesteps[start:]

    def __call__(self, latents: torch.Tensor, i: int) -> torch.Tensor:
        known = self.init
        if i < len(self.timesteps) - 1:
            known = add_noise(self.scheduler, self.init, self.noise, self.timesteps[i + 1 : i + 2])
        return (1 - self.mask) * known + self.mask * latents
