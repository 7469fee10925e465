"""What a training run logs, for `finetune` and `train-vae` alike: every row goes to
OUT/metrics.jsonl, and with `--report-to tensorboard|wandb` also to one of accelerate's trackers
(accelerate.tracking: TensorBoard under OUT/logs, or Weights & Biases), with validation images."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import check_regular, open_regular
from latentdiff.training.atomic import replace_with

REPORT_TO = ("none", "tensorboard", "wandb")
MAX_ROW_BYTES = 2**20  # a row is a step's few numbers (about 200 bytes)
_NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def require(report_to: str) -> None:
    """Refuse a tracker whose package is missing, before the run touches anything."""
    if report_to != "none" and importlib.util.find_spec(_NEEDS[report_to]) is None:
        raise UsageError(
            f"--report-to {report_to} needs the {_NEEDS[report_to]} package: pip install 'latentdiff[{report_to}]'"
        )


class RunLog:
    """OUT/metrics.jsonl plus the chosen tracker; one per run, on the main process only.
    `resumed_at`: rows logged after that step (by the run that stopped) are dropped, as they
    will be logged again."""

    def __init__(self, out: Path, report_to: str, config: dict, resumed_at: int = 0):
        require(report_to)
        self.report_to = report_to
        path = Path(out) / "metrics.jsonl"
        if os.path.lexists(path):
            check_regular(path, "run metrics file")  # appending to a FIFO would wait for a reader forever
            if resumed_at:
                _keep_rows_until(path, resumed_at)
        self.file = open(path, "a", encoding="utf-8")
        self.tracker = None if report_to == "none" else _start_tracker(report_to, Path(out), config)

    def log(self, step: int, row: dict, **file_only) -> None:
        """One row of numbers; `file_only` values go to metrics.jsonl but not to the tracker."""
        self.file.write(json.dumps({"step": step, **row, **file_only}) + "\n")
        self.file.flush()
        if self.tracker is not None:
            self.tracker.log(row, step=step)

    def images(self, images, prompts: list[str], step: int) -> None:
        """Validation images (PIL) to the tracker, captioned by their prompts."""
        if self.report_to == "tensorboard":
            import numpy as np

            for i, (im, prompt) in enumerate(zip(images, prompts)):
                self.tracker.writer.add_image(f"validation/{i}: {prompt[:60]}", np.asarray(im), step, dataformats="HWC")
        elif self.report_to == "wandb":
            import wandb

            self.tracker.log({"validation": [wandb.Image(im, caption=p) for im, p in zip(images, prompts)]}, step=step)

    def close(self) -> None:
        self.file.close()
        if self.tracker is not None:
            self.tracker.finish()
            self.tracker = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _keep_rows_until(path: Path, step: int) -> None:
    """Drop the rows after `step` from metrics.jsonl, and a row a kill cut short or damage made
    unreadable; read a line at a time (a row longer than MAX_ROW_BYTES is dropped unread), and
    replaced whole, so a crash here leaves the old file."""

    def kept(line: bytes) -> bool:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
            return False
        return isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step

    def write(dst) -> None:
        with os.fdopen(open_regular(path, "run metrics file"), "rb") as src:
            while line := src.readline(MAX_ROW_BYTES + 1):
                if len(line) > MAX_ROW_BYTES:  # the rest of an over-long row, skipped a piece at a time
                    while line and not line.endswith(b"\n"):
                        line = src.readline(MAX_ROW_BYTES)
                elif kept(line):
                    dst.write(line if line.endswith(b"\n") else line + b"\n")

    replace_with(path, write)


def _start_tracker(report_to: str, out: Path, config: dict):
    from accelerate import PartialState
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    PartialState()  # accelerate's trackers log through accelerate's logger, which needs its state (train-vae)
    if report_to == "tensorboard":
        tracker = TensorBoardTracker("latentdiff", out / "logs")
    else:  # wandb's local files go beside the run, unless WANDB_DIR says where
        logs = Path(os.environ.get("WANDB_DIR") or out / "logs")
        logs.mkdir(parents=True, exist_ok=True)
        tracker = WandBTracker("latentdiff", name=out.resolve().name, dir=str(logs))
    tracker.start()
    # Trackers record scalar hyper-parameters; lists and mappings stay in OUT/config.yaml.
    tracker.store_init_configuration({k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))})
    return tracker
