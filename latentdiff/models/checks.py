"""Checks of a config's values, before a module or scheduler is built from it:

- counts that make Python objects (layers, blocks, heads, list lengths) are bounded;
- scheduler configs must name a diffusers scheduler and a step count it can work with;
- latentdiff.json's recommended settings are checked like the flags they stand for;
- any error a library raises over a bad config becomes one line naming the file.

(That a module's config does not describe more weights than its folder holds is checked where the
module is built, on the meta device: models/assemble.py.)
"""

from __future__ import annotations

import math
from pathlib import Path

import latentdiff.config.params as params
from latentdiff.errors import ModelError
from latentdiff.models.files import first_line
from latentdiff.sampling.schedulers import make_scheduler

MAX_COUNT = 256  # layers, blocks, heads per config entry
MAX_LIST = 64
MAX_INT = 2**40
MAX_TRAIN_TIMESTEPS = 100_000
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_COUNT_WORDS = ("layers", "heads")


def guarded(fn, path: Path):
    """`fn()`, with any error a library raises over a bad config turned into one ModelError."""
    try:
        return fn()
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - libraries raise any type for a bad config; all mean that
        raise ModelError(f"{path} is not a usable config: {first_line(e)}") from None


def check_config_numbers(config: dict, path: Path) -> None:
    """Bound what would make objects or overflow: counts, list lengths, any integer."""
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > MAX_LIST:
            raise ModelError(f"{path}: {key} lists {len(value)} entries; at most {MAX_LIST} are supported")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ModelError(f"{path}: {key} is {v}, not a finite number")
            limit = MAX_COUNT if any(w in key for w in _COUNT_WORDS) else MAX_INT
            if abs(v) > limit:
                raise ModelError(f"{path}: {key} = {v} is out of range (at most {limit:,})")


def check_scheduler_config(config: dict, path: Path) -> dict:
    """A scheduler config we can build and step: a diffusers scheduler class, a sane number of
    training timesteps and a known prediction type. Returns it unchanged."""
    # Here, not at the top: importing diffusers takes seconds, and `--help` must not pay them.
    import diffusers

    name = config.get("_class_name", "PNDMScheduler")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ModelError(f"{path}: _class_name {name!r} is not a diffusers scheduler")
    n = config.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TRAIN_TIMESTEPS:
        raise ModelError(
            f"{path}: num_train_timesteps must be a whole number from 1 to {MAX_TRAIN_TIMESTEPS:,}, got {n!r}"
        )
    if config.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
        raise ModelError(
            f"{path}: prediction_type must be one of {', '.join(PREDICTION_TYPES)}, "
            f"got {config.get('prediction_type')!r}"
        )
    check_config_numbers(config, path)
    check_scheduler_steps(config, None, 1, path)
    return config


def check_scheduler_steps(config: dict, name: str | None, steps: int, path) -> None:
    """Build the scheduler (the model's own, or method `name` on its config) and set `steps`
    timesteps once, so a config it cannot work with fails here, in one line, before any work."""
    # A shifted flow-matching schedule takes its shift mu from the image's size, unknown here: any will do.
    shift = {"mu": 1.0} if config.get("use_dynamic_shifting") else {}
    guarded(lambda: make_scheduler(config, name).set_timesteps(steps, **shift), path)


def check_defaults(defaults: dict, path: Path) -> dict:
    """latentdiff.json: the recommended steps/guidance/CPU dtype, checked like the flags."""
    label = params.recorded_label(str(path))
    if defaults.get("steps") is not None:
        params.steps(label, defaults["steps"])
    if defaults.get("guidance") is not None:
        params.guidance(label, defaults["guidance"])
    if defaults.get("noise_level") is not None:
        params.whole(label, "noise_level", defaults["noise_level"], 0, 10_000)
    if defaults.get("cpu_dtype") is not None:
        params.choice(label, "cpu_dtype", defaults["cpu_dtype"], ("fp32", "fp16", "bf16"))
    for key in ("base_model", "lora", "upscaler"):
        if defaults.get(key) is not None:
            params.path_text(label, key, defaults[key])
    return defaults
