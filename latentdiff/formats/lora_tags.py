"""A1111's extra-network tags in prompts: `<lora:NAME:W>` and `<lora:NAME:TE:UNET>`.

As A1111 reads them (`extra_networks.parse_prompt`): every `<KIND:ARGS>` (KIND a word, ARGS up to the
next `>`) leaves the prompt text; for `lora`, NAME is a file's name without extension in the LoRA
folder (`--lora-dir`, searched below too), W its weight (1 when left out), TE and UNET the text
encoder's and the UNet's (UNET defaults to TE). A tag's LoRA is merged for the call exactly as
`--lora FILE:W` merges it at load, then the weights go back to what they were. Anything A1111
would skip with a warning (another kind, a file not in the folder) is one UsageError here.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from latentdiff.errors import UsageError
from latentdiff.formats.lora import LoraSpec, apply_loras, restore
from latentdiff.runtime.speed import check_mergeable

_TAG_HEAD = re.compile(r"<(\w+):")
EXTENSIONS = (".safetensors", ".pt", ".ckpt")


@dataclass(frozen=True)
class TagSpec(LoraSpec):
    te_scale: float = 1.0


def strip_tags(prompt: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """The prompt without its `<kind:args>` tags, and the tags as (kind, args split at ':'), in a
    linear scan (what `re.sub(r"<(\\w+):([^>]+)>", ...)` finds)."""
    out, tags, pos, close = [], [], 0, None
    for m in _TAG_HEAD.finditer(prompt):
        if m.start() < pos:  # inside the tag just taken
            continue
        if close is None or close < m.end():  # the first '>' after this head (found once per '>')
            close = prompt.find(">", m.end())
        if close == -1:
            break
        if close == m.end():  # `<a:>`: no argument, no tag
            continue
        out.append(prompt[pos : m.start()])
        tags.append((m.group(1), prompt[m.end() : close].split(":")))
        pos = close + 1
    out.append(prompt[pos:])
    return "".join(out), tags


def _number(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{tag}: {text!r} is not a weight (a number such as 0.8)") from None


def lora_specs(tags: list, lora_dir) -> list[TagSpec]:
    """The tags' LoRA files in `lora_dir` with their weights; one UsageError for anything else."""
    specs = []
    for kind, args in tags:
        tag = f"<{kind}:{':'.join(args)}>"
        if kind != "lora":
            raise UsageError(
                f"{tag}: only <lora:...> tags are supported (A1111 extra networks of kind {kind!r} are not)"
            )
        name = args[0]
        if lora_dir is None:
            raise UsageError(f"{tag} names a LoRA by file name: give the folder of LoRA files with --lora-dir")
        te = _number(args[1], tag) if len(args) > 1 and args[1] else 1.0
        unet = _number(args[2], tag) if len(args) > 2 and args[2] else te
        specs.append(TagSpec(find_lora(name, Path(lora_dir), tag), unet, te))
    return specs


def find_lora(name: str, folder: Path, tag: str) -> Path:
    """`folder/**/name.safetensors` (or .pt, .ckpt), the first in sorted order."""
    if not folder.is_dir():
        raise UsageError(f"--lora-dir {folder} is not a folder")
    for ext in EXTENSIONS:
        found = sorted(p for p in folder.rglob(f"{name}{ext}") if p.is_file()) if _plain_name(name) else []
        if found:
            return found[0]
    raise UsageError(f"{tag}: no LoRA file {name}{{{','.join(EXTENSIONS)}}} in {folder}")


def _plain_name(name: str) -> bool:
    """A file name, not a pattern or a path (rglob would read `*` and `..`)."""
    return bool(name) and not any(c in name for c in "*?[]/\\") and name not in (".", "..")


def batch_tags(texts: list[str], lora_dir) -> tuple[list[str], list[TagSpec]]:
    """The batch's texts without tags and the LoRAs their tags name (the same for every prompt of
    one batch: A1111 applies a batch's first prompt's; here differing tags are refused)."""
    stripped = [strip_tags(t) for t in texts]
    first = stripped[0][1]
    if any(tags != first for _, tags in stripped[1:]):
        raise UsageError("prompts with different <lora:...> tags are generated in separate calls (one per prompt)")
    return [t for t, _ in stripped], lora_specs(first, lora_dir) if first else []


@contextlib.contextmanager
def merged(components, specs: list[TagSpec], allow_pickle: bool = False):
    """The tags' LoRAs merged into `components` for the block, the weights restored after."""
    backup: dict = {}
    if specs:
        check_mergeable(components.unet)
    try:
        apply_loras(components, specs, allow_pickle, backup)
        yield
    finally:
        restore(backup)
