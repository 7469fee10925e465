"""Step previews without running the VAE decoder: a per-model linear map from latent channels to
RGB, fitted once by least squares on a few smooth synthetic images encoded by the model's own VAE
(A1111's "approx cheap" preview uses fixed SD1 factors; fitting makes it right for any VAE)."""

from __future__ import annotations

import base64
import io
import weakref

import torch

PREVIEW_MAX_SIDE = 128
_FITTED = weakref.WeakKeyDictionary()  # pipeline -> its fitted map, gone with the pipeline


@torch.no_grad()
def fit_latent_rgb(vae, factor: int) -> torch.Tensor:
    """(C + 1, 3) map: rgb = [latent, 1] @ W, latents in the sampler's (scaled) space."""
    g = torch.Generator("cpu").manual_seed(0)
    side = 8 * factor
    coarse = torch.rand((6, 3, 3, 3), generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=True)
    param = next(vae.parameters())
    latents = vae.encode(images.to(param.device, param.dtype)).latent_dist.mean.float().cpu()
    latents = latents * vae.config.scaling_factor  # (6, C, 8, 8)
    small = torch.nn.functional.avg_pool2d(images, factor)  # (6, 3, 8, 8)
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    y = small.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x, y).solution


def preview_data_url(pipe, latents: torch.Tensor) -> str:
    """A small PNG (data: URL) of the first latent of a batch, `latents` (B, C, h, w)."""
    from PIL import Image

    w = _FITTED.get(pipe)
    if w is None:
        w = _FITTED[pipe] = fit_latent_rgb(pipe.components.vae, pipe.scale_factor)
    z = latents[0].float().cpu().permute(1, 2, 0)  # (h, w, C)
    rgb = (torch.cat([z, torch.ones(*z.shape[:2], 1)], dim=2) @ w).clamp(-1, 1)
    arr = ((rgb + 1) * 127.5).round().to(torch.uint8).numpy()
    im = Image.fromarray(arr)
    scale = max(1, PREVIEW_MAX_SIDE // max(im.size))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
