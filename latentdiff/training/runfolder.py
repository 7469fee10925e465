"""The run-folder guard shared by `finetune` and `train-vae`: a run never destroys what is not its own.

A run folder is marked by `run.json`, written before anything else, naming the command and the
top-level entries the run may write. `--overwrite` removes only those entries, and only in a folder
that is a run. A folder counts as a run only once it holds a complete checkpoint: a first attempt
that failed before step 1 leaves debris that the retry clears, not a "run" that blocks it.

Refused, before anything is touched:
- `--out` equal to or inside the dataset (a run would write among, or delete, training images);
- `--out` that is the `--model` folder;
- `--out` that holds, and is not a run, any entry a run would write (`config.yaml`, `unet/`,
  `latentdiff.json`, ...): another model or the user's own files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import read_json
from latentdiff.training.atomic import write_whole
from latentdiff.training.checkpoint import latest_checkpoint

MANIFEST = "run.json"


def _manifest(out: Path) -> dict | None:
    if not (out / MANIFEST).exists():
        return None
    try:
        data = read_json(out / MANIFEST, "run manifest", 2**20)
    except UsageError:  # damaged: the folder counts as a run only by its checkpoints (see check_run_folder)
        return None
    return data if isinstance(data, dict) else None


def _is_inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_run_folder(
    out, command: str, entries: tuple[str, ...], *, dataset, model=None, resume: bool = False, overwrite: bool = False
) -> str:
    """Check OUT without touching it (every process runs this); returns what prepare must do:
    "new" (nothing of ours there), "retry" (an earlier attempt without a checkpoint: clear its
    entries), "overwrite" (clear a finished or stopped run) or "resume"."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    here = out.resolve()
    data = Path(dataset).expanduser().resolve()
    if _is_inside(here, data):
        raise UsageError(
            f"--out {out} is {'the' if here == data else 'inside the'} dataset folder {dataset}; "
            "a run must not write among (or delete) training images: choose another --out"
        )
    if any(_is_inside(data, here / name) for name in entries):
        raise UsageError(
            f"the dataset {dataset} lies inside {out / data.relative_to(here).parts[0]}, "
            "which a run writes; choose another --out"
        )
    if model is not None and Path(model).exists() and Path(model).resolve() == here:
        raise UsageError(f"--out {out} is the --model folder; a run would overwrite the model it trains from")
    manifest = _manifest(out)
    mine = manifest is not None
    if mine and manifest.get("command") != command:
        raise UsageError(
            f"{out} holds a `latentdiff {manifest.get('command')}` run, not a {command} run; choose another --out"
        )
    has_checkpoint = out.is_dir() and latest_checkpoint(out) is not None
    legacy = not mine and has_checkpoint and (out / "config.yaml").is_file()  # a run from before run.json
    if not mine and not legacy:
        clash = sorted(name for name in entries if (out / name).exists())
        if clash:
            raise UsageError(
                f"{out} is not a latentdiff {command} run but holds {', '.join(clash)}, which a run "
                "would overwrite (another model, or your files); choose another --out"
            )
        if resume:
            raise UsageError(f"--resume: {out} holds no run to resume")
        return "new"
    if resume:
        if not has_checkpoint:
            raise UsageError(
                f"--resume: {out} holds no complete checkpoint (the earlier attempt stopped "
                "before its first one); run again without --resume to start afresh"
            )
        return "resume"
    if not has_checkpoint:
        return "retry"
    if not overwrite:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or --overwrite to start over")
    return "overwrite"


def prepare_run_folder(out, command: str, entries: tuple[str, ...], action: str) -> Path:
    """On the main process only: clear our own entries when starting over, then mark OUT as a run."""
    out = Path(out)
    if action in ("retry", "overwrite"):
        manifest = _manifest(out) or {"entries": list(entries)}
        listed = manifest.get("entries")
        # Only names we would write ourselves: a tampered run.json must not delete anything else.
        for name in set(listed if isinstance(listed, list) else []) & set(entries):
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(out) if action == "resume" else None
    listed = manifest.get("entries") if manifest else None
    # A resumed run keeps what run.json listed and adds what it may now write (another --output-name).
    kept = [e for e in listed if isinstance(e, str)] if isinstance(listed, list) else []
    if manifest is None or set(entries) - set(kept):
        text = json.dumps({"command": command, "entries": list(dict.fromkeys((*kept, *entries)))}, indent=2) + "\n"
        write_whole(out / MANIFEST, text)
    return out
