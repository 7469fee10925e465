"""The run of a small model trained from images held in memory: `train-vae` and `train-clip` share it.

Such a run decodes its split once into uint8 tensors, keeps one module (its trained parts), an AdamW
optimizer, an LR schedule and a generator, and steps through a pure `step(step) -> (loss parts,
images)` function. Resume is exact: batch orders are pure functions of (seed, step), the generator's
state is checkpointed, and weights, optimizer and schedule are restored bit for bit. The run folder,
recipe and checkpoints are those of finetune (runfolder.py, recipe.py, checkpoint.py).
torch is imported inside functions so `latentdiff --help` stays instant.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from latentdiff.config.common import check
from latentdiff.errors import LatentDiffError
from latentdiff.runtime.files import as_umask_allows
from latentdiff.training.checkpoint import (
    damaged_checkpoint,
    incomplete_after,
    latest_checkpoint,
    load_tensors,
    load_torch,
    read_manifest,
    require_finite,
    save_checkpoint,
)
from latentdiff.training.recipe import check_recipe
from latentdiff.training.runfolder import check_run_folder, prepare_run_folder
from latentdiff.training.trackers import RunLog, require


@dataclass
class RunState:
    """What a checkpoint holds: the trained module, its optimizer, LR schedule and generator."""

    model: object
    opt: object
    schedule: object
    generator: object

    def write(self, path: Path) -> None:
        import torch
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, path / "model.safetensors")
        as_umask_allows(path / "model.safetensors")
        torch.save(self.opt.state_dict(), path / "optimizer.pt")
        torch.save(self.schedule.state_dict(), path / "lr_schedule.pt")
        torch.save(self.generator.get_state(), path / "rng.pt")

    def read(self, path: Path) -> dict:
        manifest = read_manifest(path)
        with damaged_checkpoint(path):
            self.model.load_state_dict(load_tensors(path / "model.safetensors"))
            self.opt.load_state_dict(load_torch(path / "optimizer.pt"))
            self.generator.set_state(load_torch(path / "rng.pt"))
            if (path / "lr_schedule.pt").is_file():
                self.schedule.load_state_dict(load_torch(path / "lr_schedule.pt"))
            else:  # checkpoints from before train-vae saved its schedule: it is a function of the step
                self.schedule.last_epoch = manifest["step"]
        return manifest

    def resume(self, out: Path, command: str) -> tuple[int, float]:
        """Load the latest complete checkpoint; returns (its step, the seconds trained so far)."""
        last = latest_checkpoint(out)
        if skipped := incomplete_after(out, last):
            print(f"{command}: {skipped}; resuming from the one before it", file=sys.stderr)
        manifest = self.read(last)
        print(f"{command}: resuming at step {manifest['step']}", file=sys.stderr)
        return manifest["step"], manifest.get("train_seconds", 0.0)


def prepare_out(cfg, command: str, entries: tuple[str, ...], model=None) -> Path:
    """Refuse to mix two runs in one folder; with --overwrite delete only what a run writes."""
    action = check_run_folder(
        cfg.out, command, entries, dataset=cfg.dataset, model=model, resume=cfg.resume, overwrite=cfg.overwrite
    )
    if action == "resume":
        check_recipe(cfg, cfg.out)
    require(cfg.report_to)
    return prepare_run_folder(cfg.out, command, entries, action)


def scan_split(cfg, out: Path):
    """Training records (train split) and held-out records (split=heldout); skipped.txt written."""
    # Here, not at the top: it imports torch, which the trainers must not pay for at start-up.
    from latentdiff.training.data.scan import scan_dataset

    scan = scan_dataset(
        cfg.dataset,
        cfg.resolution,
        missing_captions="empty",
        include_heldout=True,
        follow_symlinks=cfg.follow_symlinks,
        report_dir=out,
    )
    scan.write_skipped(out)
    train = [r for r in scan.records if r.split != "heldout"]
    heldout = [r for r in scan.records if r.split == "heldout"]
    check(
        len(train) >= cfg.batch_size,
        f"batch size {cfg.batch_size} is larger than the "
        f"{len(train)} training images; use --batch-size {len(train)} or less",
    )
    return train, heldout


def load_images(records, resolution: int):
    """Decode every record once into a uint8 tensor (N, 3, H, W): for datasets that fit in memory
    (3,655 emoji at 64x64 are 45 MB), it removes per-step PNG decoding, which on a small CPU costs
    more than a small model."""
    import torch

    # Here, not at the top: it imports torch, which the trainers must not pay for at start-up.
    from latentdiff.images.read import reload_training_image

    out = torch.empty((len(records), 3, resolution, resolution), dtype=torch.uint8)
    for i, record in enumerate(records):
        pixels, _ = reload_training_image(record.path, resolution)
        out[i] = pixels.add(1).mul(127.5).round().to(torch.uint8)  # exact: pixels are k/127.5 - 1
    return out


def batch_indices(n: int, batch_size: int, seed: int, step: int):
    """Indices of the batch for `step`: a fresh seeded permutation per epoch, last partial dropped."""
    import torch

    epoch, i = divmod(step, n // batch_size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size : (i + 1) * batch_size]


def train_loop(
    cfg, command: str, log: RunLog, out: Path, state: RunState, step: Callable, start: int, seconds: float
) -> float:
    """Steps start..max_steps of `step(step) -> (loss parts, images)`, each followed by the schedule's
    step, with logging and checkpoints; returns total training seconds."""
    from tqdm import tqdm

    bar = tqdm(total=cfg.max_steps, initial=start, desc=command, file=sys.stderr, dynamic_ncols=True)
    tick, seen = time.perf_counter(), 0
    for index in range(start, cfg.max_steps):
        lr = state.schedule.get_last_lr()[0]
        parts, images = step(index)
        state.schedule.step()
        if not math.isfinite(parts["loss"]):
            raise LatentDiffError(
                f"loss became {parts['loss']} at step {index + 1}; lower --lr (now {cfg.lr}) or use mixed_precision: no"
            )
        seen, done = seen + images, index + 1
        bar.set_postfix(loss=f"{parts['loss']:.4f}", refresh=False)
        bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            now = time.perf_counter()
            seconds, rate = seconds + now - tick, seen / (now - tick)
            log.log(done, {**parts, "lr": lr, "images_per_s": round(rate, 1)})
            tick, seen = now, 0
        if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
            require_finite(state.model.named_parameters(), done)
            save_checkpoint(
                out, done, state.write, keep=cfg.keep_checkpoints, extra={"train_seconds": round(seconds, 2)}
            )
    bar.close()
    return seconds
