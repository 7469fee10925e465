"""The simplified DDPM objective (Ho et al. 2020), as pure functions of a batch and an RNG.

Every random draw of a step (here timesteps and noise; in batches.py the latent sample and
caption dropout) comes from one generator seeded by (seed, step, micro-step, process), so a
resumed run replays exactly the draws an uninterrupted one would have made, with no RNG state to save.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentdiff.families.pixel import LEARNED
from latentdiff.families.unet import UNetCall
from latentdiff.sampling.model_call import Inputs
from latentdiff.training.vlb import HYBRID_WEIGHT, vlb_loss


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    mixed = ((seed * 1_000_003 + step) * 1_009 + micro) * 131 + rank
    return torch.Generator("cpu").manual_seed(mixed % (2**63 - 1))


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(t.device)[t]
    return a / (1 - a)


def loss_weights(alphas_cumprod, t, prediction_type: str, snr_gamma: float | None) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023); all ones when disabled."""
    if snr_gamma is None:
        return torch.ones_like(t, dtype=torch.float32)
    s = snr(alphas_cumprod, t)
    clipped = torch.clamp(s, max=snr_gamma)
    return clipped / (s + 1) if prediction_type == "v_prediction" else clipped / s


def learns_variance(scheduler) -> bool:
    """Whether the sampler reads a variance half of the output (IF's learned_range); an IF-layout UNet
    sampled without one keeps 2C output channels (diffusers' pipelines drop the second half) untrained."""
    return scheduler.config.get("variance_type") in LEARNED


def diffusion_loss(
    unet,
    noise_scheduler,
    latents,
    context,
    gen: torch.Generator,
    snr_gamma=None,
    noise_offset: float = 0.0,
    image_cond=None,
    residuals: tuple = (),
    timesteps: tuple[int, int] | None = None,
) -> torch.Tensor:
    """MSE between the UNet's prediction and the target (noise or v) at random timesteps.
    `context`: the text conditioning (`conditioning.Embeddings`: the (B, T, D) context and SDXL's
    extra inputs); `image_cond` (sampling.model_call.ImageChannels, an upscaler's low-res image) goes in beside the
    noisy latents; `residuals` (the model call's Residuals: a ControlNet being trained) add to the UNet's
    blocks; `timesteps` (lo, hi): draw t from [lo, hi) instead of the whole schedule. The UNet is called as
    generation calls it (families/unet.UNetCall's arguments); `unet` may be an accelerate-wrapped module."""
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=gen).to(latents.device)
    if noise_offset:
        # Offset noise (Guttenberg 2023) lets the model learn very dark or bright images.
        noise = noise + noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen).to(latents.device)
    lo, hi = timesteps or (0, noise_scheduler.config.num_train_timesteps)
    t = torch.randint(lo, hi, (b,), generator=gen).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    kind = noise_scheduler.config.prediction_type
    target = noise_scheduler.get_velocity(latents, noise, t) if kind == "v_prediction" else noise
    channels = None if image_cond is None else image_cond.to(noisy.dtype)
    inputs = Inputs(context, channels, residuals)
    pred = unet(UNetCall.sample(noisy, inputs), t, **UNetCall.kwargs(noisy, t, inputs)).sample.float()
    c = latents.shape[1]
    per_sample = F.mse_loss(pred[:, :c], target.float(), reduction="none").mean(dim=(1, 2, 3))
    if pred.shape[1] == 2 * c and learns_variance(noise_scheduler):  # IF's layout: the hybrid objective
        per_sample = per_sample + HYBRID_WEIGHT * vlb_loss(noise_scheduler, latents, noisy, t, *pred.split(c, 1))
    w = loss_weights(noise_scheduler.alphas_cumprod, t, kind, snr_gamma)
    return (per_sample * w).mean()


def prior_loss(prior, scheduler, x0: torch.Tensor, text: tuple, gen: torch.Generator) -> torch.Tensor:
    """The prior's x0 objective (DALL-E 2's, as Kandinsky 2.2 trains it): the normalised image
    embeddings `x0` (B, D) noised to a random timestep, the prediction held against x0 itself.
    `text`: the captions' (projected embeddings (B, D), hidden states (B, T, W), mask (B, T))."""
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    embeds, hidden, mask = text
    pred = prior(noisy, timestep=t, proj_embedding=embeds, encoder_hidden_states=hidden, attention_mask=mask)
    return F.mse_loss(pred.predicted_image_embedding.float(), x0.float())
