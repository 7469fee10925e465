"""`finetune(cfg)`: one training loop for LoRA, full fine-tuning (and training from scratch) and
ControlNet training (training/controlnet.py).

The trainable set is the only difference between methods (see state.make_trainable). Every
random draw of a step is derived from (seed, step), the data order from the step counter,
and checkpoints hold weights + optimizer + LR schedule + EMA, so `--resume` continues exactly
as if the run had never stopped.

This module is the hub: it calls each part in turn (run folder guard, dataset scan, models and
TrainState, batch source, steps, checkpoints, outputs) and hands each the data it needs, so the parts
seldom call into each other (`python benchmarks/call_walk.py` follows a run and counts where they do).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from latentdiff.errors import LatentDiffError, UsageError
from latentdiff.families.registry import family_of
from latentdiff.runtime.compile import prepare_unet_for_training
from latentdiff.runtime.threads import default_training_threads, torch_threads
from latentdiff.training import checkpoint as ckpt
from latentdiff.training import trackers
from latentdiff.training.batches import BatchSource, every_caption
from latentdiff.training.bounds import check_finetune
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.controlnet import ControlSource
from latentdiff.training.data.dataset import ImageCaptionDataset, assign_bucket, make_buckets
from latentdiff.training.data.order import DataOrder, run_order
from latentdiff.training.data.scan import scan_dataset
from latentdiff.training.flow import FlowObjective, flow_family
from latentdiff.training.objective import diffusion_loss, step_generator
from latentdiff.training.outputs import save_model, validate
from latentdiff.training.prior import check_prior_inputs, prepare_prior
from latentdiff.training.start import note_size, open_run, report_long_captions, resume, saved_tokenizer, say
from latentdiff.training.state import TrainState, load_models, write_trainable
from latentdiff.training.unclip_decoder import DecoderSource
from latentdiff.training.upscaler import UpscalerSource


def finetune(cfg: FinetuneConfig) -> Path:
    """Train per `cfg`; returns OUT, which then holds a model `generate --model OUT` can use."""
    with torch_threads(cfg.num_threads) as threads:
        return _finetune(cfg, threads)


def _finetune(cfg: FinetuneConfig, threads: torch_threads) -> Path:
    if cfg.method == "prior":
        check_prior_inputs(cfg)  # before OUT is touched
    out, acc = open_run(cfg)
    records = _scan(cfg, acc, out)
    prepare = prepare_prior if cfg.method == "prior" else _prepare_unet
    state, wrapped, batch_loss, order = prepare(cfg, acc, records, threads)
    if cfg.resume:
        resume(cfg, out, state)
    log = trackers.RunLog(out, cfg.report_to, cfg.to_dict(), state.step) if acc.is_main_process else None
    try:
        _train(cfg, out, acc, state, wrapped, batch_loss, order, log, records[0].conditioning)
    finally:
        if log:
            log.close()
    if acc.is_main_process:
        state.use_ema()  # the final model carries the EMA weights (full fine-tuning with --ema-decay)
        save_model(cfg, out, state)
    acc.wait_for_everyone()
    acc.end_training()
    return out


def _prepare_unet(cfg: FinetuneConfig, acc, records: list, threads: torch_threads):
    """The UNet methods (lora, full, controlnet): models, trainable state, batches and the step's loss."""
    setup = load_models(
        cfg, every_caption(records, cfg.alt_captions), tokenizer=saved_tokenizer(Path(cfg.out)) if cfg.resume else None
    )
    check_finetune(cfg, setup.components, [r.repeats for r in records], acc.device, setup.train_text_encoder)
    default_training_threads(threads, acc.device, sum(p.numel() for p in setup.components.unet.parameters()))
    if acc.is_main_process:
        note_size(cfg, setup)
    state = TrainState.create(cfg, setup)
    wrapped, dtype = _place(cfg, acc, state)
    source, order = _batches(cfg, acc, records, state, wrapped, dtype)
    unet = wrapped.get("unet", setup.components.unet)
    return state, wrapped, _unet_loss(cfg, acc, source, setup.components, unet), order


def _unet_loss(cfg: FinetuneConfig, acc, source: BatchSource, components, unet):
    """The loss of one micro-batch (dataset indices, the step's generator, the epoch): `_objective`'s."""
    loss_of = _objective(cfg, components, unet)

    def batch_loss(idx: list[int], gen: torch.Generator, epoch: int) -> torch.Tensor:
        latents, size_ids = source.latents(idx, gen, epoch)
        with acc.autocast():
            context = source.context(idx, gen, size_ids)
            return loss_of(latents, context, gen, source.image_cond(idx, gen), source.residuals())

    return batch_loss


def _scan(cfg: FinetuneConfig, acc, out: Path) -> list:
    """The dataset's usable records; the main process reports (and lists in OUT/skipped.txt) the rest."""
    scan = scan_dataset(
        cfg.dataset,
        cfg.resolution,
        missing_captions=cfg.missing_captions,
        follow_symlinks=cfg.follow_symlinks,
        caption_extension=cfg.caption_extension,
        repeats=cfg.repeats,
        conditioning=cfg.method == "controlnet",
        report_dir=out,  # a refusal's full list goes to OUT/skipped.txt
    )
    if acc.is_main_process:
        scan.write_skipped(out)
        say(
            f"dataset: {len(scan.records)} image(s) to train on, {len(scan.skipped)} skipped (see {out / 'skipped.txt'})"
        )
        for note in scan.notes:
            say(note)
    return scan.records


def _place(cfg: FinetuneConfig, acc, state: TrainState) -> tuple[dict, torch.dtype]:
    """Frozen parts onto the device in the mixed-precision dtype, trained modules and optimizer through
    accelerate; returns the wrapped trained modules and that dtype."""
    c, trained = state.setup.components, state.modules
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    c.vae.to(acc.device, dtype)
    for name in ("unet", "text_encoder", "text_encoder_2", "text_encoder_3"):  # the UNet is frozen beside a ControlNet
        if name not in trained and getattr(c, name) is not None:
            getattr(c, name).to(acc.device, dtype)
    frozen_in_compute_dtype(trained.values(), dtype)

    prepare_unet_for_training(c.unet, acc.device, cfg.compile)
    *modules, state.optimizer = acc.prepare(*trained.values(), state.optimizer)
    return dict(zip(trained, modules)), dtype


def _batches(cfg: FinetuneConfig, acc, records: list, state: TrainState, wrapped: dict, dtype):
    """What the steps train on: the batch source (an upscaler's adds low-res images) and the data order."""
    c, captions = state.setup.components, [r.caption for r in records]
    buckets = make_buckets(cfg.resolution) if cfg.buckets else None
    dataset = ImageCaptionDataset(records, cfg.resolution, cfg.crop, cfg.flip, cfg.seed, buckets)
    cache = cfg.cache and cfg.crop == "center"
    if cfg.cache and not cache and acc.is_main_process:
        say("random crops: latents are encoded every step (caching needs --crop center)")
    kind = _source_kind(cfg, family_of(c))
    source = kind(
        c,
        dataset,
        captions,
        cache=cache,
        flip=cfg.flip,
        train_text="text_encoder" in state.modules,
        caption_dropout=cfg.caption_dropout,
        device=acc.device,
        dtype=dtype,
        progress=acc.is_main_process,
        alternatives=[r.alt_captions for r in records] if cfg.alt_captions else None,
    )
    source.use_encoders(wrapped)
    if acc.is_main_process and not flow_family(c):  # a transformer family's encoders say what they cut
        report_long_captions(c.tokenizer, every_caption(records, cfg.alt_captions))
    bucket_of = [assign_bucket(r.width, r.height, buckets) for r in records] if buckets else None
    return source, run_order(cfg, acc.num_processes, records, bucket_of)


def _source_kind(cfg: FinetuneConfig, family):
    """What a step's batches carry besides latents and text: a ControlNet's maps, an upscaler's
    low-res image, an unCLIP decoder's image embedding."""
    if cfg.method == "controlnet":
        return ControlSource
    return UpscalerSource if family.upscales else DecoderSource if family.name == "unclip" else BatchSource


def _train(cfg, out, acc, state: TrainState, wrapped: dict, batch_loss, order: DataOrder, log, control_image=None):
    """Optimizer steps state.step..max_steps, with metrics, checkpoints and validation images
    (`log` is None on all processes but the main one). `batch_loss(indices, generator, epoch)`: the
    method's loss of one micro-batch (_unet_loss, training/prior.py); `control_image`: what a
    ControlNet run's validation images are steered by."""
    from PIL import Image
    from tqdm.auto import tqdm

    start, named, optimizer = state.step, state.params, state.optimizer
    bar = tqdm(total=cfg.max_steps, initial=start, desc="finetune", file=sys.stderr, disable=not acc.is_main_process)
    last_good = ckpt.latest_checkpoint(out)
    t0, images = time.perf_counter(), 0
    try:
        for step in range(start, cfg.max_steps):
            losses = []
            for micro in range(cfg.grad_accum):
                gen = step_generator(cfg.seed, step, micro, acc.process_index)
                epoch, idx = order.batch(step * cfg.grad_accum + micro, acc.process_index, acc.num_processes)
                with acc.accumulate(*wrapped.values()):
                    loss = batch_loss(idx, gen, epoch)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(list(named.values()), 1.0)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach())
                images += len(idx) * acc.num_processes
            # The step's one host sync, after its work is queued (a check between forward and backward
            # would stall a GPU each micro-step). A non-finite loss stops the run before anything is saved.
            loss_value = acc.reduce(torch.stack(losses).mean(), "mean").item()
            if not math.isfinite(loss_value):
                kept = f"; the last good checkpoint ({last_good.name}) is kept" if last_good else ""
                raise LatentDiffError(f"loss became {loss_value} at step {step}{kept}; try a lower --lr")
            state.advance()
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if log and (done % cfg.log_every == 0 or done == cfg.max_steps):
                rate = images / (time.perf_counter() - t0)
                # 6 significant digits: benchmarks/finetune_cuda.py derives steady-state step times from it
                row = {
                    "loss": loss_value,
                    "lr": state.lr_schedule.get_last_lr()[0],
                    "images_per_s": float(f"{rate:.6g}"),
                }
                log.log(done, row, processes=acc.num_processes)
            if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
                ckpt.require_finite([*named.items(), *(state.ema.shadow.items() if state.ema else [])], done)
                if acc.is_main_process:
                    last_good = ckpt.save_checkpoint(
                        out,
                        done,
                        lambda d: write_trainable(d, state),
                        keep=cfg.keep_checkpoints,
                        extra={"ema_updates": state.ema.updates if state.ema else 0},
                    )
                acc.wait_for_everyone()
            if acc.is_main_process and cfg.validate_every and done % cfg.validate_every == 0:
                paths = validate(cfg, out, state, done, acc.device, control_image)
                log.images([Image.open(p) for p in paths], cfg.validation_prompts or ["a photo"], done)
    finally:
        bar.close()


def frozen_in_compute_dtype(modules, dtype: torch.dtype) -> None:
    """The frozen weights of the trained modules (LoRA's base layers, unused text-encoder parts) in the
    compute dtype, as diffusers' LoRA scripts keep them: fp32 without mixed precision even when the
    model is stored in fp16 (the shipped model is), else autocast's dtype so it does not cast every
    weight again on each forward. Trainable weights are fp32 already (state.make_trainable). Frozen
    weights are never saved (a LoRA checkpoint holds only the adapters) and resume re-reads them."""
    for m in modules:
        for p in m.parameters():
            if not p.requires_grad and p.dtype != dtype:
                p.data = p.data.to(dtype)


def _objective(cfg: FinetuneConfig, components, unet):
    """The step's loss, (latents, context, gen, image_cond, residuals) -> loss: flow matching for the
    transformer families (training/flow.py), else the DDPM objective with the model's noise schedule."""
    if flow_family(components):
        return FlowObjective.create(cfg, components, unet)
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(components.scheduler_config)
    steps = noise_scheduler.config.num_train_timesteps
    hi = steps if cfg.max_timestep is None else cfg.max_timestep
    if hi > steps:
        raise UsageError(f"--max-timestep {hi} is past the model's {steps} training timesteps")
    draw = (cfg.min_timestep, hi)

    def loss(latents, context, gen, image_cond, residuals):
        return diffusion_loss(
            unet, noise_scheduler, latents, context, gen, cfg.snr_gamma, cfg.noise_offset, image_cond, residuals, draw
        )

    return loss
