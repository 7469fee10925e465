"""One typed config per command. Precedence: dataclass defaults < YAML (--config) < flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.config.params import check_fields, flag_label, recorded_label


def check(ok: bool, msg: str) -> None:
    """The one validator of every config: a failed condition is a UsageError (exit 2)."""
    if not ok:
        raise UsageError(msg)




@dataclass
class GenerateConfig:
    """Everything `latentdiff generate` needs; None means "the model's recommendation"."""

    prompts: list[str] = field(default_factory=list)
    """Prompts to render; each gets `num_images` images."""
    model: str | None = None
    """Local diffusers directory, hub id, or None for the shipped default model."""
    out: str = "outputs"
    """Folder for PNGs; existing files are never overwritten."""
    steps: int | None = None
    guidance: float | None = None
    negative: str = ""
    seed: int | None = 0
    """Image k of a prompt uses seed + k; None draws a random seed (and records it)."""
    width: int | None = None
    height: int | None = None
    num_images: int = 1
    scheduler: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    quiet: bool = False
    compile: bool | str = False
    """torch.compile the UNet and VAE decoder (slow first call, faster steps): True/"auto" or a
    mode of accel.COMPILE_MODES (reduce-overhead = CUDA graphs, max-autotune, fp8 with torchao)."""
    image_options: dict = field(default_factory=dict)
    """Start from an image, hires fix, upscaler: `latentdiff.workflows.options.ImageOptions` fields."""
    vae: str | None = None
    """A VAE folder or file to decode with instead of the model's own."""
    refiner: str | None = None
    """An SDXL refiner model that finishes the denoising (diffusers' base + refiner handoff)."""
    refiner_start: float | None = None
    """Fraction of the denoising after which the refiner takes over (default 0.8)."""
    prompt_syntax: str = "a1111"
    """a1111: `(word:1.3)` emphasis, `[word]`, `\\(` escapes and BREAK; plain: text as written."""
    clip_skip: int | None = None
    """Use the N-th text-encoder layer from the end (A1111 numbering); None: the model's, else 1."""
    loras: list[str] = field(default_factory=list)
    """LoRA files or folders merged into the model, each "PATH" or "PATH:SCALE"."""
    embeddings: list[str] = field(default_factory=list)
    """Textual-inversion files, each "FILE" or "FILE:TOKEN" (token: the file name by default)."""

    def __post_init__(self):
        checked = check_fields({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, flag_label)
        for name, value in checked.items():
            setattr(self, name, value)
        check(bool(self.prompts), "no prompt given: pass PROMPT, --prompts FILE or --from IMAGE.png")
        check(self.refiner_start is None or self.refiner is not None, "--refiner-start needs --refiner MODEL")
        check(self.refiner_start is None or 0 < self.refiner_start < 1,
               f"--refiner-start must be between 0 and 1 (exclusive), got {self.refiner_start}")

    @classmethod
    def from_image(cls, params: dict, source: str = "the --from image", **overrides) -> "GenerateConfig":
        """Rebuild a config from a PNG's recorded parameters (checked like the flags, each error
        naming `source`); explicit flags override them."""
        recorded = {
            "prompts": [params.get("prompt")],
            "model": params.get("model"),
            "steps": params.get("steps"),
            "guidance": params.get("guidance"),
            "negative": params.get("negative_prompt", ""),
            "seed": params.get("seed"),
            "width": params.get("width"),
            "height": params.get("height"),
            "scheduler": params.get("scheduler"),
            "dtype": params.get("dtype") or "auto",
            "refiner": params.get("refiner"),
            "vae": params.get("vae"),
            "refiner_start": params.get("refiner_start"),
            "clip_skip": params.get("clip_skip"),
            "loras": _addon_specs(params.get("loras"), "scale"),
            "embeddings": _addon_specs(params.get("embeddings"), "token"),
            # Images from before the A1111 syntax existed were rendered with the text as written.
            "prompt_syntax": params.get("prompt_syntax", "plain"),
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        kept = check_fields({k: v for k, v in recorded.items() if k not in given}, recorded_label(source))
        return cls(**{**kept, **given})


def _addon_specs(records, option: str):
    """Recorded LoRAs/embeddings ({"path", "scale"|"token"}) as "PATH:OPTION" flags; anything else
    is left for the parameter check to refuse."""
    if not isinstance(records, list) or not all(isinstance(r, dict) and "path" in r and option in r for r in records):
        return records or []
    return [f"{r['path']}:{r[option]}" for r in records]


def read_prompts_file(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"--prompts file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompts file {path} cannot be read as UTF-8 text: {e}") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    check(bool(prompts), f"--prompts file {path} holds no prompts")
    return prompts


def load_yaml(path: str | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"config file {path} is not readable YAML: {e}") from None
    check(isinstance(data, dict), f"config file {path} must hold a mapping of option: value")
    return data


def merge(cls, yaml_values: dict, flags: dict):
    """Build `cls` from YAML values overridden by the flags given (every key a field of `cls`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(yaml_values) - names)
    check(not unknown, f"unknown option(s) in config file: {', '.join(unknown)}")
    stray = sorted(set(flags) - names)
    check(not stray, f"option(s) {', '.join(stray)} are not {cls.__name__} fields")  # never dropped silently
    values = {**yaml_values, **flags}
    try:
        return cls(**values)
    except TypeError as e:
        raise UsageError(f"bad config: {e}") from None
