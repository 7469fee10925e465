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
from pathlib import Path

from latentdiff.config.flag_types import finite_number, register_types, shown, text_arg, text_problem, whole_number
from latentdiff.errors import UsageError
from latentdiff.runtime.reading import parse_yaml, read_text

_INT64 = 2**63
# A list of prompts read from a file: as many as images one prompt may ask for (params.MAX_IMAGES).
# Each prompt is a full sampling run, so 10,000 is hours of work even on a large GPU; a longer list
# is more likely the wrong file than a plan, and the whole file is bounded by MAX_TEXT_BYTES too.
MAX_PROMPTS = 10_000
MAX_MAPPING_CHARS = 65_536  # an inline YAML mapping flag (--sample-defaults '{steps: 20}')


def field_docs(cls) -> dict[str, str]:
    """{field: docstring} from the string literal under each field of a dataclass's source (and
    of the dataclasses it extends)."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = _class_body(klass)
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _class_body(klass) -> list:
    """The statements of `klass`'s definition. The module is parsed whole: ast's C parser is several
    times faster than inspect.getsource's tokenizer, which `--help` would wait for."""
    tree = ast.parse(Path(inspect.getsourcefile(klass)).read_text(encoding="utf-8"))
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == klass.__name__]
    if len(found) != 1:  # a name defined twice in its file: the block inspect finds
        found = ast.parse(textwrap.dedent(inspect.getsource(klass))).body
    return found[0].body


def _kind(field) -> tuple[str, bool]:
    """('int' | 'float' | 'str' | 'bool' | 'list' | 'dict', optional) from the annotation (a string
    under `from __future__ import annotations`, else the type)."""
    text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    parts = [p.strip() for p in text.split("|")]
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
        need(not text_problem(value), "UTF-8 text without NUL")
    elif kind == "list":
        need(isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of strings")
        need(not any(text_problem(v) for v in value), "a list of UTF-8 strings without NUL")
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


def read_prompts_file(path: str, what: str = "--prompts file") -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped. (A list field's
    flag takes such a FILE.) Bounded: a regular file of UTF-8 text, at most MAX_TEXT_BYTES and
    MAX_PROMPTS prompts (a FIFO or /dev/zero is refused at once instead of read forever)."""
    text = read_text(path, what)
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError(f"{what} {path} holds no prompts")
    if len(prompts) > MAX_PROMPTS:
        raise UsageError(
            f"{what} {path} holds {len(prompts):,} prompts; at most {MAX_PROMPTS:,} are rendered in one run "
            "(each is a full sampling run: split the list)"
        )
    return prompts


def _mapping(text: str) -> dict:
    text_arg(text)
    if len(text) > MAX_MAPPING_CHARS:
        raise argparse.ArgumentTypeError(f"is {len(text):,} characters long; at most {MAX_MAPPING_CHARS:,} are read")
    try:
        value = parse_yaml(text, "value")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a YAML mapping like '{{steps: 20}}', got {shown(text)!r}")
    return value


def _read_lines(path: str) -> list[str]:  # argparse names the type in its error line: keep this name
    try:
        return read_prompts_file(text_arg(path), "file")
    except UsageError as e:  # argparse passes only these on as its one line (naming the flag)
        raise argparse.ArgumentTypeError(str(e)) from None


_PARSERS = {"int": whole_number, "float": finite_number, "str": text_arg, "list": _read_lines, "dict": _mapping}


@dataclasses.dataclass(frozen=True)
class Flag:
    """A flag that feeds a config field without being it (`--random-seed` sets `seed` to None): its
    value lands under `dest` and the config's own code turns it into the field's. A `name` without
    dashes is a positional argument."""

    name: str
    help: str
    options: dict = dataclasses.field(default_factory=dict)  # more add_argument keywords
    group: str | None = None  # the help section it is listed in
    aliases: tuple[str, ...] = ()  # more names of the same flag (A1111's, say)

    @property
    def dest(self) -> str:
        return self.options.get("dest") or self.name.lstrip("-").replace("-", "_")


def flag(
    name: str | None = None, help: str | None = None, extra: tuple[Flag, ...] = (), own: bool = True, **options
) -> dict:
    """Field metadata for a flag that its type alone does not say: another `name` ("--lora" for
    `loras`), a `help` other than the docstring (one computed from a table), argparse `options`
    (action, metavar, dest, type), `extra` flags that feed the same field, or `own=False` where
    only the extra flags do."""
    return {"flag": {"name": name, "help": help, "extra": extra, "own": own, "options": options}}


def add_flags(
    parser: argparse.ArgumentParser,
    cls,
    positional: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    say_defaults: bool = True,
    none_word: bool = True,
):
    """One flag per field of `cls` (positionals first), shaped by its `flag(...)` metadata where it
    has one; absent flags stay out of the namespace. `say_defaults`: each help ends with its
    default; `none_word`: an optional field's flag also takes `none`."""
    register_types(parser)
    docs = field_docs(cls)
    groups = {}
    fields = sorted(dataclasses.fields(cls), key=lambda f: f.name not in positional)
    for f in fields:
        if f.name in skip:
            continue
        meta = f.metadata.get("flag", {})
        if meta.get("own", True):
            name, kw = _derived(f, cls, docs, positional, say_defaults, none_word)
            kw.update(meta.get("options", {}))
            if meta.get("help"):
                kw["help"] = meta["help"].replace("%", "%%")
            if kw.get("action") in ("store_true", "store_false", "append"):
                kw.pop("type", None)
            parser.add_argument(meta.get("name") or name, **kw)
        for extra in meta.get("extra", ()):
            if extra.group is not None and extra.group not in groups:
                groups[extra.group] = parser.add_argument_group(extra.group)
            absent = {"default": argparse.SUPPRESS} if extra.name.startswith("-") else {}
            groups.get(extra.group, parser).add_argument(
                extra.name, *extra.aliases, help=extra.help.replace("%", "%%"), **absent, **extra.options
            )


def _derived(f, cls, docs: dict, positional, say_defaults: bool, none_word: bool) -> tuple[str, dict]:
    """(flag name, add_argument keywords) as the field's name, type, docstring and default say."""
    kind, optional = _kind(f)
    help = docs.get(f.name, "").replace("%", "%%")
    if f.name in positional:
        return f.name, dict(help=help)
    if say_defaults and "(default" not in help:  # a docstring may say it better ("default: the model's")
        help += _default_text(f, kind, cls).replace("%", "%%")
    kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help)
    if kind == "bool":
        return _flag(f.name), dict(kw, action=argparse.BooleanOptionalAction)
    parse = _PARSERS[kind]
    kw["type"] = _optional(parse) if optional and none_word else parse
    choices = getattr(cls, "choices", {})
    if f.name in choices:
        kw["choices"] = list(choices[f.name]) + ([None] if optional and none_word else [])
        kw["metavar"] = "{" + ",".join(map(str, choices[f.name])) + "}"
    elif kind == "list":
        kw["metavar"] = "FILE"
    return _flag(f.name), kw


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
