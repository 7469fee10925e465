"""Inpainting as A1111 1.10 does it on its own path (its modules/processing.py
StableDiffusionProcessingImg2Img.init and sd_samplers_cfg_denoiser.py, read for behaviour; our code),
masked content original, fill, latent noise or latent nothing (the picture's side, both inpaint areas:
a1111_masked.py); from A1111's image mask, the blurred mask at the run's size:
- the mask binarised (> 128), Gaussian-blurred by `mask_blur` (OpenCV's kernel: 2 int(2.5 s + 0.5) + 1
  taps, edges reflected): the image mask, taken to latent size (bicubic) and rounded: the latent mask;
- each model call's result (k-diffusion samplers: the denoised x0; timestep samplers: the x the model
  sees, before) keeps the init latents outside that mask, and so does the final sample;
- an inpainting UNet gets the rounded blurred mask and the latents of the picture with the masked
  pixels set to 0 (grey) beside its input;
- masked content: "fill" starts from the picture with the masked area filled by its surroundings'
  blurred colours (also what the inpainting UNet sees), "latent noise" from the seeds' plain noise
  there, "latent nothing" from zeros there (the init latents changed before sampling and blending).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from latentdiff.sampling.model_call import ImageChannels
from latentdiff.workflows.start import to_tensor


def _taps(sigma: float) -> np.ndarray:
    """OpenCV's bit-exact 8-bit Gaussian kernel: 2 int(2.5 sigma + 0.5) + 1 taps in 1/256ths, rounded
    from the outside in with the error carried inwards, the centre taking what is left of 256."""
    radius = int(2.5 * sigma + 0.5)
    exact = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    exact = exact / exact.sum() * 256
    taps, err = np.zeros(2 * radius + 1, dtype=np.int64), 0.0
    for i in range(radius):
        v = exact[i] + err
        taps[i] = taps[-1 - i] = int(np.rint(v))
        err = v - taps[i]
    taps[radius] = 256 - taps.sum()
    return taps


def gaussian_blur(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """OpenCV's GaussianBlur of an 8-bit image along one axis (BORDER_REFLECT_101, fixed point)."""
    taps = _taps(sigma)
    r = len(taps) // 2
    widths = [(0, 0), (0, 0)]
    widths[axis] = (r, r)
    padded = np.pad(a.astype(np.int64), widths, mode="reflect")
    n = a.shape[axis]
    total = sum(int(w) * np.take(padded, np.arange(k, k + n), axis=axis) for k, w in enumerate(taps))
    return ((total + 128) >> 8).astype(np.uint8)


def blurred_mask(mask: Image.Image, blur: int) -> Image.Image:
    """A1111's image mask: binarised, then blurred across and down by `blur` (8-bit)."""
    a = ((np.asarray(mask.convert("L")) > 128) * 255).astype(np.uint8)
    if blur > 0:
        a = gaussian_blur(gaussian_blur(a, blur, 1), blur, 0)
    return Image.fromarray(a)


def latent_mask(image_mask: Image.Image, hw: tuple[int, int], device) -> torch.Tensor:
    """The repaint mask at latent size (1, 1, h, w), 0 or 1, from A1111's image mask (blurred)."""
    small = image_mask.convert("RGB").resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
    m = np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255)
    return torch.from_numpy(m)[None, None].to(device)


_FILL_RADII = (256, 64, 16, 16, 4, 4, 4, 4, 2, 2, 0)  # A1111's masking.fill: falling blurs, some twice


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The picture with its masked area filled from around it: the rest (premultiplied alpha) blurred at
    falling radii and each composited over what is there, so the hole takes the nearby colours."""
    cut = Image.new("RGBa", image.size)
    cut.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    out = Image.new("RGBA", image.size)
    for radius in _FILL_RADII:
        out.alpha_composite(cut.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA"))
    return out.convert("RGB")


def masked_start(init: torch.Tensor, nmask: torch.Tensor, content: str, noise) -> torch.Tensor:
    """The init latents the run starts and blends from: as they are, or with the masked area the
    seeds' plain noise (`noise()`, latent noise) or zeros (latent nothing)."""
    if content == "latent_noise":
        return init * (1 - nmask) + noise().to(init) * nmask
    if content == "latent_nothing":
        return init * (1 - nmask)
    return init


class Blend:
    """Keeps the init latents outside the mask: x * nmask + init * (1 - nmask)."""

    def __init__(self, init: torch.Tensor, nmask: torch.Tensor):
        self.init, self.nmask = init, nmask.to(init.device, init.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.nmask + self.init * (1 - self.nmask)


def inpaint_channels(pipe, image: Image.Image, image_mask: Image.Image, n: int) -> ImageChannels | None:
    """An inpainting UNet's extra channels as A1111 builds them from its image mask (blurred; None for
    an ordinary model)."""
    c = pipe.components
    if not pipe.family.inpainting(c):
        return None
    m = torch.from_numpy(np.round(np.asarray(image_mask.convert("L"), dtype=np.float32) / 255))[None, None]
    vae = c.vae
    with torch.no_grad():
        pixels = to_tensor(image).to(vae.device, vae.dtype) * (1 - m.to(vae.device, vae.dtype))
        masked = vae.encode(pixels).latent_dist.mean.float() * vae.config.scaling_factor
    return ImageChannels(pipe.family.mask_channels(c, m.to(masked.device), masked.repeat(n, 1, 1, 1)))
