"""A run's recipe (`OUT/config.yaml`) and `--resume`, one mechanism for `finetune` and `train-vae`.

On resume the saved recipe is the base: `defaults < OUT/config.yaml < --config YAML < flags`, so
`latentdiff finetune DATA --out OUT --resume` continues the run as it was started. Fields that do not
change what is trained (step budget, checkpoint, logging and validation cadence, the LoRA file
layout) may differ; any other difference is refused naming the field, unless `--change-recipe`
says it is meant.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from latentdiff.config.common import load_yaml, merge
from latentdiff.errors import UsageError
from latentdiff.runtime.reading import read_yaml
from latentdiff.training.atomic import write_whole

RECIPE = "config.yaml"
# Fields that may differ on --resume without changing what was trained so far or how.
SAFE_ON_RESUME = frozenset(
    {
        "out",
        "config",
        "max_steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "validate_every",
        "validation_prompts",
        "validation_steps",
        "eval_train_images",
        "num_threads",
        "report_to",
        "allow_pickle",
        "follow_symlinks",
        "resume",
        "overwrite",
        "change_recipe",
        "compile",
        "lora_format",
        "output_name",  # the layout and name of the files written at the end, not what is trained
    }
)
# Run switches, never part of the recipe.
NOT_SAVED = ("resume", "overwrite", "change_recipe", "config")
# Fields that name local files or folders: saved as absolute paths, so that `--resume` and `export`
# work from any directory (a recipe's `model: configs/models/x.yaml` is relative to where it ran).
PATH_FIELDS = ("dataset", "model", "out", "image_encoder")


def absolute_paths(values: dict) -> dict:
    """values with each PATH_FIELDS entry that names an existing local path made absolute (a hub id
    or a missing path is left as written)."""
    for key in PATH_FIELDS:
        value = values.get(key)
        if isinstance(value, str) and value and os.path.exists(value):
            values[key] = os.path.abspath(value)
    return values


def saved_recipe(out) -> dict:
    """OUT/config.yaml as a dict ({} when there is none); a damaged one (not YAML, not UTF-8, too
    large or deep, a FIFO in its place, not a mapping) is one UsageError naming it."""
    path = Path(out) / RECIPE
    if not os.path.lexists(path):
        return {}
    values = read_yaml(path, "the run's recipe") or {}
    if not isinstance(values, dict):
        raise UsageError(f"the run's recipe {path} must hold a mapping of option: value, not {type(values).__name__}")
    return values


def recipe_dict(cfg) -> dict:
    """The config as saved in OUT/config.yaml; a JSON round trip turns tuples into YAML lists."""
    values = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return absolute_paths({k: v for k, v in values.items() if k not in NOT_SAVED})


def build_config(cls, yaml_path: str | None, flags: dict):
    """A command's config from its flags: defaults < saved recipe (on --resume) < YAML < flags."""
    base = {}
    if flags.get("resume") and flags.get("out"):
        base = {k: v for k, v in saved_recipe(flags["out"]).items() if k in {f.name for f in dataclasses.fields(cls)}}
    return merge(cls, {**base, **load_yaml(yaml_path)}, flags)


def check_recipe(cfg, out) -> list[str]:
    """On resume: refuse fields that differ from the saved recipe (unless cfg.change_recipe);
    returns the changed fields that are allowed."""
    saved = absolute_paths(saved_recipe(out))
    now = recipe_dict(cfg)
    changed = sorted(k for k in now if k in saved and saved[k] != now[k])
    risky = [k for k in changed if k not in SAFE_ON_RESUME]
    if risky and not getattr(cfg, "change_recipe", False):
        first = risky[0]
        raise UsageError(
            f"--resume with a different {first} ({saved[first]!r} in {Path(out) / RECIPE}, now "
            f"{now[first]!r}{' and ' + ', '.join(risky[1:]) if risky[1:] else ''}) would not continue "
            "the same run; drop the flag, or pass --change-recipe to continue with the new value"
        )
    for k in risky:
        print(f"latentdiff: --change-recipe: {k} {saved[k]!r} -> {now[k]!r}", file=sys.stderr, flush=True)
    return changed


def write_recipe(cfg, out, last_keys: tuple[str, ...] = ()) -> None:
    import yaml

    values = recipe_dict(cfg)
    ordered = {k: v for k, v in values.items() if k not in last_keys}
    ordered.update({k: values[k] for k in last_keys if k in values})
    write_whole(Path(out) / RECIPE, yaml.safe_dump(ordered, sort_keys=False))
