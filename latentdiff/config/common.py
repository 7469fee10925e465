"""What every command's config shares: the one validator, YAML files, and the merge of defaults, YAML
and flags. Precedence: dataclass defaults < YAML (--config) < flags."""

from __future__ import annotations

import dataclasses

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import read_yaml


def check(ok: bool, msg: str) -> None:
    """The one validator of every config: a failed condition is a UsageError (exit 2)."""
    if not ok:
        raise UsageError(msg)


def load_yaml(path: str | None) -> dict:
    """A --config YAML file (or a run's saved recipe): a regular file of UTF-8 text, at most
    MAX_CONFIG_BYTES, nesting at most MAX_DEPTH deep, holding a mapping."""
    if path is None:
        return {}
    data = read_yaml(path, "config file") or {}
    check(isinstance(data, dict), f"config file {path} must hold a mapping of option: value")
    return data


def merge(cls, yaml_values: dict, flags: dict):
    """Build `cls` from YAML values overridden by the flags given (every key a field of `cls`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(yaml_values) - names)  # YAML keys may be numbers, null, ...
    check(not unknown, f"unknown option(s) in config file: {', '.join(unknown)}")
    stray = sorted(set(flags) - names)
    check(not stray, f"option(s) {', '.join(stray)} are not {cls.__name__} fields")  # never dropped silently
    values = {**yaml_values, **flags}
    try:
        return cls(**values)
    except TypeError as e:
        raise UsageError(f"bad config: {e}") from None
