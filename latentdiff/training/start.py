"""How a fine-tuning run starts, before its first step: the run folder checked against --resume and
--overwrite, a checkpoint resumed, and the notes a user should read first (size, long captions)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from latentdiff.errors import UsageError
from latentdiff.families.registry import family_of
from latentdiff.models.assemble import load_tokenizer
from latentdiff.models.components import vae_scale_factor
from latentdiff.prompts.chunks import chunk_count
from latentdiff.runtime.device import note_cpu_bf16
from latentdiff.training import checkpoint as ckpt
from latentdiff.training import trackers
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.flow import check_flow, folder_view
from latentdiff.training.outputs import run_files
from latentdiff.training.recipe import check_recipe, write_recipe
from latentdiff.training.runfolder import check_run_folder, prepare_run_folder
from latentdiff.training.state import TrainState, read_trainable


def check_out(cfg: FinetuneConfig) -> tuple[Path, str]:
    """Check OUT against --resume/--overwrite (runfolder.py) and a resumed run's recipe; touches nothing
    (every process runs it). Returns OUT and what prepare_run_folder must do."""
    action = check_run_folder(
        cfg.out,
        "finetune",
        run_files(cfg),
        dataset=cfg.dataset,
        model=cfg.model,
        resume=cfg.resume,
        overwrite=cfg.overwrite,
    )
    if action == "resume":
        check_recipe(cfg, cfg.out)
    if Path(cfg.model, "model_index.json").is_file():  # a local model refused before OUT is touched
        check_flow(cfg, folder_view(Path(cfg.model)))
    return Path(cfg.out), action


def open_run(cfg: FinetuneConfig):
    """OUT checked, the accelerator made, and (main process) the run folder prepared with its recipe."""
    from accelerate import Accelerator

    out, action = check_out(cfg)
    trackers.require(cfg.report_to)
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UsageError(
            "--mixed-precision fp16 needs a CUDA GPU (on the CPU accelerate runs neither fp16 autocast "
            "nor loss scaling); use --mixed-precision no (fp32) or bf16"
        )
    if cfg.mixed_precision == "bf16" and not torch.cuda.is_available():
        note_cpu_bf16(torch.device("cpu"), torch.bfloat16, "--mixed-precision no")
    _release_precision(cfg.mixed_precision)
    # cpu=True on GPU-less machines makes a torchrun/accelerate launch use gloo DDP across processes.
    acc = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    acc.wait_for_everyone()  # every process has checked OUT before the main one changes it
    if acc.is_main_process:  # clear an overwritten run's files, mark OUT as a run, write the resolved config.yaml
        prepare_run_folder(out, "finetune", run_files(cfg), action)
        write_recipe(cfg, out)
    acc.wait_for_everyone()
    return out, acc


def _release_precision(mixed_precision: str) -> None:
    """accelerate fixes the mixed precision once per process and refuses another with a ValueError, so
    a second in-process run (the Python API, a notebook) in another precision would fail: forget the
    earlier run's accelerator state (the process group, kept in PartialState, stays as it is)."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()


def resume(cfg, out, state: TrainState) -> None:
    last = ckpt.latest_checkpoint(out)
    skipped = ckpt.incomplete_after(out, last)
    if last is None:
        raise UsageError(
            f"--resume: no complete checkpoint in {out / 'checkpoints'}{f' ({skipped})' if skipped else ''}"
        )
    if skipped:
        say(f"{skipped}; resuming from the one before it")
    with ckpt.damaged_checkpoint(last):
        state.load_state_dict(read_trainable(last), last)
    if state.step >= cfg.max_steps:
        say(f"checkpoint is at step {state.step} >= --max-steps {cfg.max_steps}; writing the outputs only")
    say(f"resuming from {last.name}")


def note_size(cfg: FinetuneConfig, setup) -> None:
    """One line when --resolution is not the size the base model was made for (the shipped model: 64)."""
    c, family = setup.components, family_of(setup.components)
    native = family.native_size(c, vae_scale_factor(c.vae))
    if not setup.from_scratch and not family.upscales and cfg.resolution != native:
        say(
            f"--resolution {cfg.resolution}: {cfg.model} makes {native}x{native} images; training at "
            f"{cfg.resolution} teaches it a new size as well (slower; --resolution {native} keeps its own)"
        )


def report_long_captions(tokenizer, captions: list[str]) -> None:
    long = sum(chunk_count(tokenizer, [t]) > 1 for t in set(captions))
    if long:
        say(
            f"{long} caption(s) are longer than {tokenizer.model_max_length - 2} tokens; they are encoded in "
            "chunks, as generation encodes long prompts (nothing is cut)"
        )


def saved_tokenizer(out: Path):
    """A from-scratch run's tokenizer, as trained at its start (captions could have changed)."""
    last = ckpt.latest_checkpoint(out)
    if last is None or not (last / "tokenizer").is_dir():
        return None

    return load_tokenizer(last / "tokenizer")


def say(msg: str) -> None:
    print(f"latentdiff: {msg}", file=sys.stderr, flush=True)
