"""Checks of a config's values, before a module or scheduler is built from it:

- counts that make Python objects (layers, blocks, heads, list lengths) are bounded;
- a number wherever the class the config is for (diffusers' UNet, VAE and schedulers, transformers'
  CLIP) holds a number by default, so a string or null there is one line, not a torch traceback;
- scheduler configs must name a diffusers scheduler and a step count it can work with;
- latentdiff.json's recommended settings are checked like the flags they stand for;
- any error a library raises over a bad config becomes one line naming the file.

(That a module's config does not describe more weights than its folder holds is checked where the
module is built, on the meta device: models/assemble.py.)
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from pathlib import Path

import latentdiff.config.params as params
from latentdiff.errors import ModelError, UsageError
from latentdiff.models.files import first_line
from latentdiff.sampling.few_step import expand
from latentdiff.sampling.sampler_table import OPTIONS
from latentdiff.sampling.schedulers import SCHEDULERS, make_scheduler

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
    """Bound what would make objects or overflow: counts, list lengths, any integer. No whole number
    of a config is negative (token ids aside) and no count of heads is 0: a text encoder built with
    -1 heads loads and fails at its first prompt (found by the fuzzing)."""
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
            least = 1 if "heads" in key else 0
            if abs(v) > limit or isinstance(v, int) and v < least and not key.endswith("_token_id"):
                raise ModelError(f"{path}: {key} = {v} is out of range (from {least} to {limit:,})")


def check_scheduler_config(config: dict, path: Path, steps: int = 1) -> dict:
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
    check_numbers_where_numbers(config, _scheduler_defaults(cls), path)
    check_scheduler_steps(config, None, steps, path, finite=False)  # `steps`: the fewest its users may ask for
    return config


def _scheduler_defaults(own) -> dict:
    """The defaults of the config's own scheduler class over those of every class a request may
    build on the same config (sampling/schedulers.SCHEDULERS)."""
    import diffusers

    merged = {}
    for method in SCHEDULERS.values():
        merged = {**init_defaults(getattr(diffusers, method.cls)), **merged}
    return {**merged, **init_defaults(own)}


@functools.lru_cache(maxsize=None)
def init_defaults(cls) -> dict:
    """The keyword defaults of a diffusers class's __init__: what its config holds when a key is left out."""
    empty = inspect.Parameter.empty
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not empty}


DIFFUSERS_CLASSES = {"unet": "UNet2DConditionModel", "transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL"}
# The transformers a `transformer` folder may hold, as its config's _class_name names them (Flux's where it names none).
TRANSFORMER_CLASSES = (
    "FluxTransformer2DModel",
    "SD3Transformer2DModel",
    "QwenImageTransformer2DModel",
    "ZImageTransformer2DModel",
    "Flux2Transformer2DModel",
    "ChromaTransformer2DModel",
)
# The diffusers pipelines whose folders load (model_index.json's _class_name starts with one).
PIPELINE_CLASSES = (
    "StableDiffusionPipeline",
    "StableDiffusionXL",
    "StableDiffusionInpaint",
    "StableDiffusionImg2Img",
    "StableDiffusionUpscale",
    "FluxPipeline",
    "FluxImg2ImgPipeline",
    "FluxFillPipeline",
    "FluxKontextPipeline",
    "ChromaPipeline",
    "Flux2KleinPipeline",
    "StableDiffusion3Pipeline",
    "StableDiffusion3Img2ImgPipeline",
    "StableDiffusion3InpaintPipeline",
    "QwenImagePipeline",
    "QwenImageImg2ImgPipeline",
    "QwenImageInpaintPipeline",
    "ZImagePipeline",
    "ZImageImg2ImgPipeline",
    "StableUnCLIPPipeline",
    "StableUnCLIPImg2ImgPipeline",
    "IFPipeline",  # a pixel base (families/pixel.py): no vae/
)
# The VAEs a `vae` folder may hold, as its config's _class_name names them (AutoencoderKL where it names none).
VAE_CLASSES = ("AutoencoderKL", "AutoencoderKLQwenImage", "AutoencoderKLFlux2")


def diffusers_class(config: dict, what: str, path: Path | None = None) -> str:
    """The diffusers class of component `what` (unet, transformer, vae) with this config."""
    named = config.get("_class_name")
    if what == "vae":  # AutoencoderKL unless one of VAE_CLASSES is named (old folders name others, or none)
        return named if named in VAE_CLASSES else DIFFUSERS_CLASSES[what]
    allowed = TRANSFORMER_CLASSES if what == "transformer" else None
    if allowed is None or named is None:
        return DIFFUSERS_CLASSES[what]
    if named not in allowed:
        raise ModelError(
            f"{path or what}: {what} class {_shown(named)} is not supported (supported: {', '.join(allowed)})"
        )
    return named


def check_diffusers_config(config: dict, what: str, path: Path) -> dict:
    """A UNet's or VAE's config (`what`: unet or vae): numbers bounded and numbers where diffusers'
    class has them. Returns it unchanged."""
    import diffusers

    check_config_numbers(config, path)
    check_numbers_where_numbers(
        config, init_defaults(getattr(diffusers, diffusers_class(config, what, path))), path, True
    )
    shift = config.get("shift_factor")  # null in diffusers' defaults, so not typed above (Flux's VAE sets it)
    if what == "vae" and shift is not None and (isinstance(shift, bool) or not isinstance(shift, (int, float))):
        raise ModelError(f"{path}: shift_factor must be a number or null, got {_shown(shift)}")
    size = config.get("sample_size")
    if what == "unet" and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ModelError(f"{path}: sample_size must be a whole number >= 1 (latent pixels), got {_shown(size)}")
    return config


def check_numbers_where_numbers(given: dict, defaults, path: Path, per_block: bool = False) -> None:
    """A number wherever the class's `defaults` (a dict, or a config object) hold one: a whole
    number where they hold an int, a list of numbers where a tuple of them; with `per_block`
    (diffusers' models) an int may also be given as a (nested) list of ints, one per block. A
    null or a string there fails later, deep inside torch (found by the fuzzing: layer_norm_eps
    null; issue 24: a VAE scaling_factor "0.18215"). Special token ids may be null in real
    configs; check_text_pair checks them against the tokenizer."""
    for key, value in given.items():
        default = defaults.get(key) if isinstance(defaults, dict) else getattr(defaults, key, None)
        kind = _number_kind(default)
        if kind is None or key.endswith("_token_id"):
            continue
        listed = isinstance(value, list) and value and _leaves_are(value, kind)
        if isinstance(default, (tuple, list)):
            ok, shape = listed, "a list of "
        else:
            ok, shape = _is(value, kind) or (per_block and kind is int and listed), ""
        if not ok:
            noun = (
                ("whole numbers" if shape else "a whole number")
                if kind is int
                else ("numbers" if shape else "a number")
            )
            raise ModelError(f"{path}: {key} must be {shape}{noun} (like {default!r}), got {_shown(value)}")


def _number_kind(default) -> type | None:
    """int or float for a number or a non-empty tuple of them; None for anything else (bools too)."""
    values = list(default) if isinstance(default, (tuple, list)) and default else [default]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return int if all(isinstance(v, int) for v in values) else float


def _is(value, kind: type) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (kind is float or isinstance(value, int))


def _leaves_are(value: list, kind: type) -> bool:
    """Every leaf of the nested lists `value` is a number of `kind` (read_json bounds the nesting)."""
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, list):
            pending.extend(v)
        elif not _is(v, kind):
            return False
    return True


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_scheduler_steps(config: dict, name: str | None, steps: int, path, finite: bool = True) -> None:
    """Build the scheduler (the model's own, or method `name` on its config) and set `steps`
    timesteps once, so a config it cannot work with fails here, in one line, before any work."""
    # A shifted flow-matching schedule takes its shift mu from the image's size, unknown here: any will do.
    shift = {"mu": 1.0} if config.get("use_dynamic_shifting") else {}
    scheduler = guarded(lambda: make_scheduler(config, name), path)
    with warnings.catch_warnings():  # numpy's 0/0 warning of a stretched one-step schedule: refused below
        warnings.simplefilter("ignore", RuntimeWarning)
        guarded(lambda: scheduler.set_timesteps(steps, **shift), path)
    sigmas = getattr(scheduler, "sigmas", None)
    if finite and sigmas is not None and not all(math.isfinite(float(s)) for s in sigmas):
        # Qwen-Image's schedule is stretched to end at shift_terminal: one step gives 0/0 (NaN in diffusers too)
        raise UsageError(
            f"{steps} step(s) give this model's schedule ({path}) values that are not numbers; use more steps"
        )


def check_defaults(defaults: dict, path: Path) -> dict:
    """latentdiff.json: the recommended steps/guidance/sampler (or a few-step preset)/CPU dtype, checked like
    the flags."""
    label = params.recorded_label(str(path))
    defaults = expand(defaults, str(path))
    params.scheduler(label, defaults.get("scheduler"))
    for key in OPTIONS:
        if defaults.get(key) is not None:
            params.real(label, key, defaults[key], 0, 1000)
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
