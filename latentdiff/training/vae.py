"""Train the latent autoencoder: `latentdiff train-vae DATASET --out DIR --config vae.yaml`.

A diffusers AutoencoderKL learns L1 + MSE reconstruction with a small KL term: the LDM "KL-f4"
recipe without its perceptual and GAN losses, which need pretrained nets we cannot download.
At the end `scaling_factor = 1 / std(latents)` is set as in the LDM paper, so the diffusion model
sees unit-variance latents, and reconstruction PSNR is measured on held-out and training images.

The training split is decoded once into one uint8 tensor (N, 3, H, W). That is for datasets that
fit in memory (3,655 emoji at 64x64 are 45 MB): it removes per-step PNG decoding, which on a small
CPU would cost more than the model. A dataset too large for RAM would need a streaming loader.

Resume is exact: the batch order is a pure function of (seed, step), posterior noise comes from a
generator whose state is checkpointed, and weights and optimizer are restored bit for bit.
torch and diffusers are imported inside functions so `latentdiff --help` stays instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from pathlib import Path

from latentdiff.errors import LatentDiffError, UsageError
from latentdiff.runtime.files import as_umask_allows
from latentdiff.training.bounds import check_vae
from latentdiff.training.lr_schedule import make_lr_schedule
from latentdiff.training.recipe import write_recipe
from latentdiff.training.small_run import RunState, batch_indices, load_images, prepare_out, scan_split, train_loop
from latentdiff.training.trackers import RunLog
from latentdiff.training.vae_config import RUN_ENTRIES, VaeTrainConfig
from latentdiff.training.vae_metrics import db, latent_std, mean_psnr, to_unit

# --- pure pieces: schedule, batches, loss, one step -------------------------------------------


def vae_loss(vae, x, kl_weight: float, generator):
    """L1 + MSE of the reconstruction of a posterior sample, + kl_weight * mean KL. x: (B, 3, H, W)."""
    post = vae.encode(x).latent_dist  # mean/logvar: (B, C, H/f, W/f)
    recon = vae.decode(post.sample(generator=generator)).sample.float()
    l1 = (recon - x).abs().mean()
    mse = (recon - x).pow(2).mean()
    mean, logvar = post.mean.float(), post.logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = l1 + mse + kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def train_step(vae, opt, x, cfg: VaeTrainConfig, generator) -> dict:
    """One optimizer step on batch x in [-1, 1]; returns the loss parts as floats."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16"):
        loss, parts = vae_loss(vae, x, cfg.kl_weight, generator)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.max_grad_norm)
    opt.step()
    return parts


# --- data, model, checkpoints ------------------------------------------------------------------


def build_vae(arch: dict, seed: int | None = None, device=None):
    """The AutoencoderKL of `arch`, seeded; on the meta device (`device="meta"`) it holds no memory,
    so its weights can be counted before any is made."""
    import torch
    from diffusers import AutoencoderKL

    if seed is not None:
        torch.manual_seed(seed)
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return AutoencoderKL(**arch)
    except (TypeError, ValueError) as e:
        raise UsageError(f"the vae: section does not build an AutoencoderKL: {str(e)[:300]}") from None


# --- evaluation ----------------------------------------------------------------------------


def _finish(cfg, out: Path, vae, train_u8, heldout_u8, device, seconds: float) -> dict:
    """Set scaling_factor, measure PSNR, save the diffusers VAE and eval.json."""
    import diffusers
    import torch

    vae.eval()
    with torch.no_grad():
        mean, std = latent_std(vae, train_u8, device)
        if not math.isfinite(std) or std <= 0:
            raise LatentDiffError(f"latent std is {std}; training diverged (try a lower --lr)")
        vae.register_to_config(scaling_factor=1.0 / std)
        subset = torch.linspace(0, len(train_u8) - 1, min(cfg.eval_train_images, len(train_u8))).long()
        result = {
            "psnr_heldout": mean_psnr(vae, heldout_u8, device),
            "psnr_train": mean_psnr(vae, train_u8[subset], device),
            "num_heldout": len(heldout_u8),
            "num_train_eval": len(subset),
            "scaling_factor": 1.0 / std,
            "latent_mean": mean,
            "latent_std": std,
            "steps": cfg.max_steps,
            "train_seconds": round(seconds, 1),
            "params": sum(p.numel() for p in vae.parameters()),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        }
    vae.save_pretrained(out / "vae", safe_serialization=True)
    as_umask_allows(out / "vae")
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


# --- the run ---------------------------------------------------------------------------------


def train_vae(cfg: VaeTrainConfig) -> dict:
    """Train (or resume), then write OUT/vae, OUT/eval.json; returns the eval.json contents."""
    # Here, not at the top: it imports torch, which vae.py must not pay for at start-up.
    from latentdiff.runtime.threads import torch_threads

    with torch_threads(cfg.num_threads) as threads:
        return _train_vae(cfg, threads)


def _train_vae(cfg: VaeTrainConfig, threads) -> dict:
    import torch

    # Here, not at the top: it imports torch, which vae.py must not pay for at start-up.
    from latentdiff.runtime.device import note_cpu_bf16
    from latentdiff.runtime.threads import default_training_threads

    out = prepare_out(cfg, "train-vae", RUN_ENTRIES)
    train, heldout = scan_split(cfg, out)
    print(f"train-vae: {len(train)} training and {len(heldout)} held-out images", file=sys.stderr)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = sum(p.numel() for p in build_vae(cfg.vae, device="meta").parameters())
    check_vae(cfg, len(train) + len(heldout), device, params)
    train_u8, heldout_u8 = load_images(train, cfg.resolution), load_images(heldout, cfg.resolution)
    if cfg.mixed_precision == "bf16":
        note_cpu_bf16(device, torch.bfloat16, "--mixed-precision no")
    vae = build_vae(cfg.vae, cfg.seed).to(device).train()
    default_training_threads(threads, device, sum(p.numel() for p in vae.parameters()))
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = make_lr_schedule(opt, cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps)
    state = RunState(vae, opt, schedule, torch.Generator().manual_seed(cfg.seed))
    start, seconds = state.resume(out, "train-vae") if cfg.resume else (0, 0.0)
    write_recipe(cfg, out, last_keys=("vae",))  # the model part last, so the file reads recipe first

    def step(index: int):
        x = to_unit(train_u8[batch_indices(len(train_u8), cfg.batch_size, cfg.seed, index)]).to(device)
        return train_step(vae, opt, x, cfg, state.generator), len(x)

    with RunLog(out, cfg.report_to, dataclasses.asdict(cfg), resumed_at=start) as log:
        seconds = train_loop(cfg, "train-vae", log, out, state, step, start, seconds)
    result = _finish(cfg, out, vae, train_u8, heldout_u8, device, seconds)
    print(
        f"train-vae: PSNR held-out {db(result['psnr_heldout'])}, train {db(result['psnr_train'])}, "
        f"scaling_factor {result['scaling_factor']:.5f}",
        file=sys.stderr,
    )
    return result
