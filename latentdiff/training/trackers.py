"""`--report-to tensorboard|wandb`: loss, lr, images/s and validation images through accelerate's
trackers, beside OUT/metrics.jsonl (which is always written)."""

from __future__ import annotations

import importlib.util

from ..errors import UsageError

_NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def tracker_kwargs(report_to: str, out) -> dict:
    """Accelerator(...) arguments for the chosen tracker; refuses one whose package is missing."""
    if report_to == "none":
        return {}
    if importlib.util.find_spec(_NEEDS[report_to]) is None:
        raise UsageError(f"--report-to {report_to} needs the {_NEEDS[report_to]} package: "
                         f"pip install 'latentdiff[{report_to}]'")
    return {"log_with": report_to, "project_dir": str(out / "logs")}


def start(acc, report_to: str, cfg_dict: dict) -> None:
    if report_to != "none":
        # Trackers record scalar hyper-parameters; lists and mappings stay in OUT/config.yaml.
        scalars = {k: v for k, v in cfg_dict.items() if isinstance(v, (int, float, str, bool))}
        acc.init_trackers("latentdiff", config=scalars)


def log_images(acc, report_to: str, images, prompts: list[str], step: int) -> None:
    """Validation images (PIL) to the tracker, captioned by their prompts."""
    if report_to == "tensorboard":
        import numpy as np

        writer = acc.get_tracker("tensorboard").writer
        for i, (im, prompt) in enumerate(zip(images, prompts)):
            writer.add_image(f"validation/{i}: {prompt[:60]}", np.asarray(im), step, dataformats="HWC")
    elif report_to == "wandb":
        import wandb

        acc.get_tracker("wandb").log({"validation": [wandb.Image(im, caption=p) for im, p in zip(images, prompts)]},
                                     step=step)
