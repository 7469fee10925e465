"""Command-line flags and type checks derived from a config dataclass (litgpt/jsonargparse style).

Every field becomes a flag (`max_steps` -> `--max-steps`) whose help is the field's docstring, so
no field lacks a flag and help text has one source. Types come from the annotations:
`int`, `float`, `str`, `bool` (`--flag/--no-flag`), `X | None` (also takes `none`), `list[str]`
(a FILE with one item per line) and `dict` (an inline YAML mapping). A class attribute `choices`
maps field names to their allowed values, checked for YAML and flags alike; `required` names fields
without a usable default. Each flag's help ends with its default.
Only this module's standard-library imports load at `--help` time.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap

from latentdiff.errors import UsageError
from latentdiff.config.generate import read_prompts_file

_INT64 = 2**63


def field_docs(cls) -> dict[str, str]:
    """{field: docstring} from the string literal under each field of a dataclass's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _kind(field) -> tuple[str, bool]:
    """('int' | 'float' | 'str' | 'bool' | 'list' | 'dict', optional) from a string annotation."""
    parts = [p.strip() for p in str(field.type).split("|")]
    optional = "None" in parts
    base = next(p for p in parts if p != "None")
    return ("list" if base.startswith("list") else base), optional


def check_types(cfg) -> None:
    """YAML happily yields strings for `1e-3`, floats for `1.5` steps, a number for a list:
    say which field is wrong in one line instead of failing inside torch."""
    choices = getattr(type(cfg), "choices", {})
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind, optional = _kind(f)
        if value is None and optional:
            continue
        setattr(cfg, f.name, _checked(f.name, kind, value))
        if f.name in choices and value not in choices[f.name]:
            allowed = ", ".join(map(str, choices[f.name]))
            raise UsageError(f"{_name(f.name)} must be one of {allowed}; got {value!r}")


def _checked(name: str, kind: str, value):
    def need(ok: bool, what: str, hint: str = ""):
        if not ok:
            raise UsageError(f"{_name(name)} must be {what}, got {value!r}{hint}")

    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        need(isinstance(value, int) and not isinstance(value, bool), "a whole number")
        need(-_INT64 <= value < _INT64, "a whole number below 2**63")
    elif kind == "float":
        need(is_num, "a number", " (YAML reads 1e-3 as text; write 1.0e-3)" if isinstance(value, str) else "")
        need(math.isfinite(value), "a finite number")
        return float(value)
    elif kind == "bool":
        need(isinstance(value, bool), "true or false")
    elif kind == "str":
        need(isinstance(value, str), "text")
    elif kind == "list":
        need(isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of strings")
    elif kind == "dict":
        need(isinstance(value, dict), "a mapping of key: value")
    return value


def _name(name: str) -> str:
    """How an error names a field: as YAML (config.yaml) and as a flag."""
    return f"{name} ({_flag(name)})"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(parse):
    def parse_or_none(text: str):
        return None if text.lower() in ("none", "null") else parse(text)

    parse_or_none.__name__ = parse.__name__  # argparse names the type in its error line
    return parse_or_none


def _read_lines(path: str) -> list[str]:
    return read_prompts_file(path)


def _mapping(text: str) -> dict:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping like '{{steps: 20}}', got {text!r}")
    return value


_PARSERS = {"int": int, "float": float, "str": str, "list": _read_lines, "dict": _mapping}


def add_flags(parser: argparse.ArgumentParser, cls, positional: tuple[str, ...] = (), skip: tuple[str, ...] = ()):
    """One flag per field of `cls` (positionals first); absent flags stay out of the namespace."""
    docs = field_docs(cls)
    choices = getattr(cls, "choices", {})
    fields = sorted(dataclasses.fields(cls), key=lambda f: f.name not in positional)
    for f in fields:
        if f.name in skip:
            continue
        kind, optional = _kind(f)
        help = docs.get(f.name, "").replace("%", "%%")
        if f.name in positional:
            parser.add_argument(f.name, help=help)
            continue
        if "(default" not in help:  # a docstring may say it better ("default: the model's")
            help += _default_text(f, kind, cls).replace("%", "%%")
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help)
        if kind == "bool":
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            continue
        parse = _PARSERS[kind]
        kw["type"] = _optional(parse) if optional else parse
        if f.name in choices:
            kw["choices"] = list(choices[f.name]) + ([None] if optional else [])
            kw["metavar"] = "{" + ",".join(map(str, choices[f.name])) + "}"
        elif kind == "list":
            kw["metavar"] = "FILE"
        parser.add_argument(_flag(f.name), **kw)


def _default_text(field, kind: str, cls) -> str:
    """' (default: 1000)', ' (default: on)', ' (required)', or '' for a text field that is empty."""
    if field.name in getattr(cls, "required", ()):
        return " (required)"
    value = field.default_factory() if field.default is dataclasses.MISSING else field.default
    if value == "":
        return ""
    if kind == "bool":
        return f" (default: {'on' if value else 'off'})"
    return f" (default: {'none' if value is None or value in ([], {}) else value})"


def given(args: argparse.Namespace, cls) -> dict:
    """The config fields given on the command line (add_flags leaves absent ones out)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
