"""What a generation request may ask for: one schema for the CLI flags, the parameters a PNG
recorded (`--from`) and the Python API, checked before anything is loaded or allocated.

Each check raises `UsageError` naming the parameter the way its caller spells it (`--num-images`
on the command line, `num_images` in Python, `the recorded steps` for `--from`).
"""

from __future__ import annotations

import math
import os
import re
from typing import Callable

from latentdiff.config.flag_types import text_problem
from latentdiff.errors import UsageError
from latentdiff.prompts.syntax import SYNTAXES
from latentdiff.runtime.levers import parse_speed
from latentdiff.runtime.offload import MODES as OFFLOAD_MODES
from latentdiff.sampling.schedulers import check_scheduler_name

# Steps and guidance for a model whose latentdiff.json recommends none (diffusers' SD defaults are 50/7.5)
FALLBACK_STEPS, FALLBACK_GUIDANCE = 25, 7.5

MAX_SEED = 2**63 - 1
MAX_STEPS = 10_000  # also bounded by the model's training timesteps (see check_steps)
MAX_SIDE = 16_384  # pixels; the memory estimate (resources.py) usually refuses far less
MAX_IMAGES = 10_000  # per prompt and call
MAX_GUIDANCE = 100.0
CFG_OPTIONS = {"cfg_normalization": (0.0, 0.0, MAX_GUIDANCE), "cfg_truncation": (1.0, 0.0, 1.0)}  # (off, lo, hi)
MAX_PROMPT_CHARS = 10_000  # ~2,500 CLIP tokens, 33 chunks of 75
MAX_PATH_CHARS = 4096
MAX_CLIP_SKIP = 64  # more than any CLIP encoder's layers
MAX_THREADS = 4096  # CPU threads a generation may be given (--num-threads)
THREADS_HELP = "CPU threads for each image (default: chosen per call from the CPUs free now; OMP_NUM_THREADS too)"
MAX_LORA_SCALE = 100.0  # A1111 users stay within -2..2; far past that a LoRA only breaks the image
DEVICE_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16")

Label = Callable[[str], str]


def api_label(name: str) -> str:
    return name


def flag_label(name: str) -> str:
    if name in ("prompt", "prompts"):
        return "the prompt"
    return "--" + {"negative_prompt": "negative", "loras": "lora", "embeddings": "embedding"}.get(name, name).replace(
        "_", "-"
    )


def recorded_label(source: str) -> Label:
    return lambda name: f"the {name} recorded in {source}"


def fail(label: Label, name: str, rule: str, value) -> None:
    shown = repr(value) if isinstance(value, str) else _short(value)
    raise UsageError(f"{label(name)} must be {rule}, got {shown}")


def _short(value) -> str:
    text = repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def whole(label: Label, name: str, value, lo: int, hi: int) -> int:
    """An int (or integral float) in [lo, hi]; bools and strings are refused."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ok, value = True, int(value)
    if not ok:
        fail(label, name, "a whole number", value)
    if value < lo:
        fail(label, name, f">= {lo}", value)
    if value > hi:
        fail(label, name, f"<= {hi}", value)
    return value


def real(label: Label, name: str, value, lo: float, hi: float) -> float:
    """A finite int or float in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(label, name, "a finite number", value)
    if value < lo:
        fail(label, name, f">= {_num(lo)}", value)
    if value > hi:
        fail(label, name, f"<= {_num(hi)}", value)
    return float(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def text(label: Label, name: str, value, limit: int = MAX_PROMPT_CHARS) -> str:
    if not isinstance(value, str):
        fail(label, name, "a string", value)
    if len(value) > limit:
        raise UsageError(f"{label(name)} is {len(value):,} characters long; at most {limit:,} are accepted")
    if "\0" in value:
        raise UsageError(f"{label(name)} contains a NUL character")
    if not value.isascii() and text_problem(value):  # a lone surrogate: argv's or JSON's "\udcff"
        raise UsageError(f"{label(name)} {text_problem(value)}")
    return value


def path_text(label: Label, name: str, value) -> str:
    """A path given as str or os.PathLike (returned as str)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        fail(label, name, "a path (a string)", value)
    if not value.strip():  # Path("") is the current folder: never what was meant
        fail(label, name, "a path, not empty", value)
    return text(label, name, value, MAX_PATH_CHARS)


def flag(label: Label, name: str, value) -> bool:
    if not isinstance(value, bool):
        fail(label, name, "True or False", value)
    return value


def compile_value(label: Label, name: str, value):
    """False/True, or a compile mode name (accel.COMPILE_MODES), normalised."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        fail(label, name, "True, False or a compile mode name", value)
    # Here, not at the top: it imports torch, which params.py must not pay for at start-up.
    from latentdiff.runtime.compile import compile_mode

    return compile_mode(value)


def choice(label: Label, name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise UsageError(f"unknown {name} {_short(value)}; use {', '.join(choices)}")
    return value.strip().lower()


def device(label: Label, value) -> str:
    if not isinstance(value, str) or not DEVICE_NAME.match(value.strip().lower()):
        raise UsageError(f"unknown device {_short(value)}; use auto, cpu, cuda, cuda:N or mps")
    return value.strip().lower()


def scheduler(label: Label, value, a1111: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        fail(label, "scheduler", "a scheduler name (a string)", value)
    return check_scheduler_name(value, a1111=a1111)


def seed(label: Label, value, count: int = 1) -> int:
    """A seed whose `count` images (seeds value .. value + count - 1) all fit in 0 .. 2^63 - 1."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:  # A1111's -1 means "random"
        hint = {flag_label: "; for a random seed use --random-seed", api_label: "; for a random seed use seed=None"}
        raise UsageError(f"{label('seed')} must be >= 0, got {value}{hint.get(label, '')}")
    value = whole(label, "seed", value, 0, MAX_SEED)
    if value + count - 1 > MAX_SEED:
        raise UsageError(
            f"{label('seed')} {value} with {count} images would need seeds beyond 2^63 - 1; "
            f"use at most {MAX_SEED - count + 1}"
        )
    return value


def size(label: Label, name: str, value, factor: int = 1) -> int:
    """A side length in pixels: a whole number, a multiple of the model's `factor`, bounded."""
    value = whole(label, name, value, max(factor, 1), MAX_SIDE)
    if value % factor:
        lo, hi = value - value % factor, value - value % factor + factor
        hint = f"try {lo} or {hi}" if lo else f"try {hi}"
        raise UsageError(f"{label(name)} {value} is not a multiple of {factor}; {hint}")
    return value


def hires_size(width: int, height: int, scale: float, factor: int) -> tuple[int, int]:
    """The hires fix's second-pass size: `scale` times the first, in multiples of `factor`."""
    return (max(factor, round(width * scale / factor) * factor), max(factor, round(height * scale / factor) * factor))


def steps(label: Label, value, train_timesteps: int | None = None) -> int:
    """Steps >= 1, at most MAX_STEPS and at most the model's training timesteps (DDIM, DDPM and
    PNDM cannot pick more distinct timesteps than the model was trained with)."""
    hi = MAX_STEPS if train_timesteps is None else min(MAX_STEPS, train_timesteps)
    value = whole(label, "steps", value, 1, MAX_STEPS)
    if value > hi:
        raise UsageError(f"{label('steps')} must be <= {hi} (the model's number of training timesteps), got {value}")
    return value


def guidance(label: Label, value) -> float:
    return real(label, "guidance", value, 0.0, MAX_GUIDANCE)


def true_cfg(label: Label, value) -> float:
    """A guidance-distilled model's true CFG scale: 1 (off) or more."""
    return real(label, "true_cfg", value, 1.0, MAX_GUIDANCE)


def cfg_option(label: Label, name: str, value) -> float:
    """Z-Image's CFG normalisation (0: off; else the guided norm's cap in conditional norms) or truncation (1: off)."""
    off, lo, hi = CFG_OPTIONS[name]
    return real(label, name, off if value is None else value, lo, hi)


def num_images(label: Label, value) -> int:
    return whole(label, "num_images", value, 1, MAX_IMAGES)


def prompts(label: Label, value) -> list[str]:
    """A string or a non-empty list of strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        fail(label, "prompt", "a string or a non-empty list of strings", value)
    return [text(label, "prompt", t) for t in items]


def _paths(label: Label, name: str, value) -> list[str]:
    """A list of "PATH[:OPTION]" strings (--lora, --embedding; their files are checked on parse)."""
    if not isinstance(value, (list, tuple)):
        fail(label, name, "a list of paths", value)
    return [path_text(label, name, v) for v in value]


def callback(label: Label, value):
    if value is not None and not callable(value):
        fail(label, "callback", "a function (step, total, latents) or None", value)
    return value


def lora_scale(label: Label, value) -> float:
    return real(label, "LoRA scale", value, -MAX_LORA_SCALE, MAX_LORA_SCALE)


def prompt_syntax(label: Label, value) -> str:
    if not isinstance(value, str) or value not in SYNTAXES:
        raise UsageError(f"{label('prompt_syntax')} must be one of: {', '.join(SYNTAXES)}; got {_short(value)}")
    return value


def _optional(check):
    return lambda label, name, value: None if value is None else check(label, name, value)


# GenerateConfig's fields (the CLI flags, and what --from rebuilds from a PNG) -> their check.
FIELDS = {
    "model": _optional(path_text),
    "out": path_text,
    "steps": _optional(lambda label, name, v: steps(label, v)),
    "guidance": _optional(lambda label, name, v: guidance(label, v)),
    "true_cfg": lambda label, name, v: true_cfg(label, 1.0 if v is None else v),
    **dict.fromkeys(CFG_OPTIONS, cfg_option),
    "negative": lambda label, name, v: text(label, name, "" if v is None else v),
    "seed": _optional(lambda label, name, v: seed(label, v)),
    "width": _optional(size),
    "height": _optional(size),
    "num_images": lambda label, name, v: num_images(label, v),
    "scheduler": lambda label, name, v: scheduler(label, v),
    "device": lambda label, name, v: device(label, v),
    "dtype": lambda label, name, v: choice(label, name, v, DTYPE_NAMES),
    "offload": lambda label, name, v: choice(label, name, v, OFFLOAD_MODES),
    "allow_pickle": flag,
    "quiet": flag,
    "compile": compile_value,
    "speed": lambda label, name, v: parse_speed(v).text,  # None: an image recorded before --speed (off)
    "prompt_syntax": lambda label, name, v: prompt_syntax(label, v),
    # The model's layer count bounds it further when the model is loaded (conditioning.py).
    "clip_skip": _optional(lambda label, name, v: whole(label, name, v, 1, MAX_CLIP_SKIP)),
    "num_threads": _optional(lambda label, name, v: whole(label, name, v, 1, MAX_THREADS)),
    "loras": _paths,
    "embeddings": _paths,
    "components": _optional(path_text),
    "text_encoders": _paths,
}


def check_fields(values: dict, label: Label) -> dict:
    """Check (and normalise) whichever GenerateConfig fields `values` holds."""
    out = dict(values)
    for name, value in values.items():
        if name == "prompts":
            out[name] = prompts(label, value) if value else []
        elif name == "scheduler" and values.get("noise"):  # A1111's own path runs its samplers
            out[name] = scheduler(label, value, a1111=True)
        elif name in FIELDS:
            out[name] = FIELDS[name](label, name, value)
    return out
