"""What train-vae measures of a VAE: reconstruction PSNR and the latents' spread (for the scaling factor), on
uint8 pictures brought to [-1, 1] as training brings them."""

from __future__ import annotations


def to_unit(images_u8):
    """uint8 (B, 3, H, W) -> float in [-1, 1], the range the VAE is trained on."""
    return images_u8.float().div(127.5).sub(1.0)


def mean_psnr(vae, images_u8, device, batch: int = 128) -> float | None:
    """Mean over images of PSNR (dB) on 8-bit RGB between decode(encode(x).mode()) and x."""
    import torch

    if len(images_u8) == 0:
        return None
    values = []
    for chunk in images_u8.split(batch):
        latent = vae.encode(to_unit(chunk).to(device)).latent_dist.mode()
        recon = vae.decode(latent).sample.clamp(-1, 1).add(1).mul(127.5).round().cpu()
        mse = (recon - chunk.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        values.append(10 * torch.log10(255.0**2 / mse))
    return torch.cat(values).mean().item()


def latent_std(vae, images_u8, device, batch: int = 128) -> tuple[float, float]:
    """(mean, std) over all elements of the posterior means of `images_u8`."""
    import torch

    means = [vae.encode(to_unit(c).to(device)).latent_dist.mean.cpu() for c in images_u8.split(batch)]
    latents = torch.cat(means).double()  # (N, C, H/f, W/f)
    return latents.mean().item(), latents.std().item()


def db(value: float | None) -> str:
    return "n/a (no held-out images)" if value is None else f"{value:.2f} dB"
