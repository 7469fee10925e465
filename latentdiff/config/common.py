"""What every command's config shares: the one validator, YAML files, and the merge of defaults, YAML
and flags. Precedence: dataclass defaults < YAML (--config) < flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from latentdiff.errors import UsageError


def check(ok: bool, msg: str) -> None:
    """The one validator of every config: a failed condition is a UsageError (exit 2)."""
    if not ok:
        raise UsageError(msg)


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
