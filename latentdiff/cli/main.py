"""Command line: the top parser over the commands' modules (cli/<command>.py: flags -> config ->
API), dispatch, and known errors mapped to one line and an exit code.

Nothing heavy is imported at module level: `latentdiff --help` must answer instantly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from latentdiff.config.flag_types import flag_message, register_types
from latentdiff.errors import LatentDiffError
from latentdiff.runtime.signals import interrupts_deferred

PROG = "latentdiff"
# The modules cli/<name>.py, in the order help lists their commands. Each `add_parser(sub)` adds its
# command(s), with the function that runs one as `func`. Imported by name when the parser is built:
# `python -m latentdiff.cli.train_vae` runs that module as __main__, and importing it before (from
# this package) would make runpy warn.
COMMANDS = (
    "generate",
    "upscale",
    "detect",
    "convert",
    "finetune",
    "export",
    "train_vae",
    "train_clip",
    "emoji",
    "serve",
)


def one_line(text: str) -> str:
    """`text` with control characters (a newline in a quoted argument or path) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: one line, exit 2 (main returns it)
        self.exit(2, f"{PROG}: error: {one_line(flag_message(message))}\n")


class _CommandParser(_Parser):
    """A command's parser: numbers, text and paths read strictly (config/flag_types.py), whichever
    way the command declares its flags."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        register_types(self)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Text-to-image latent diffusion: generate images, fine-tune models.")
    parser.add_argument("--version", action="version", version=f"{PROG} 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"latentdiff.cli.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        with interrupts_deferred():
            parser = build_parser()
            args = _parsed(parser, argv)
        if isinstance(args, int):  # a refused command line: its one line is printed
            return args
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        code = _dispatch(args)
    except KeyboardInterrupt:  # also during start-up, before a command runs: exit 130, no traceback
        print(f"{PROG}: interrupted; files written so far are kept", file=sys.stderr)
        code = 130
        if argv is None:  # a second Ctrl-C during the interpreter's teardown would print a traceback
            sys.stderr.flush()
            os._exit(code)
        return code
    if argv is None and args.command in ("generate", "upscale"):
        # The real command line (not a test calling main([...])): every image is written and
        # closed, so skip the interpreter's teardown of torch/diffusers (2-3 s on a small CPU).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _parsed(parser, argv):
    """The parsed arguments, or the exit code of a refused command line (--help and --version
    still end in SystemExit(0))."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        if not e.code:
            raise
        return e.code


def _dispatch(args) -> int:
    try:
        return args.func(args)
    except LatentDiffError as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except MemoryError:
        print(f"{PROG}: error: out of memory; try fewer --num-images or a smaller size", file=sys.stderr)
        return 1
    except OSError as e:
        # Disk full, permission denied, a path that is a file: the user can act on these.
        print(
            one_line(f"{PROG}: error: {e.strerror or e}{': ' + str(e.filename) if e.filename else ''}"), file=sys.stderr
        )
        return 1
