"""The package's layers, read from its source with `ast` (nothing is imported): every latentdiff
import of every module, top-level and inside functions, must respect the layer table of
docs/design (shared/design.md), form no cycle, and an import inside a function must say why on its
line or the line above (start-up time: `--help` must not import torch).

    python tests/test_layers.py   # print every violation
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "latentdiff"
# layer -> the layers it may import (besides itself); "*" = all but the ones in FORBIDDEN
LOW = {"errors"}
ALLOWED = {
    "errors": set(),
    "runtime": LOW,
    "prompts": LOW,
    "sampling": LOW,
    "families": LOW | {"runtime", "prompts", "sampling"},
    "config": LOW | {"runtime", "prompts", "sampling"},
    "models": LOW | {"runtime", "prompts", "sampling", "families", "config"},
}
FORBIDDEN = {
    "formats": {"training", "workflows", "cli", "server", "pipeline"},
    "images": {"pipeline", "workflows", "cli", "server", "training"},
    "workflows": {"pipeline", "cli", "server", "training"},
    "pipeline": {"cli", "server", "training"},
    "training": {"cli", "workflows", "server"},
    "server": {"cli"},
}


@dataclass(frozen=True)
class Import:
    source: str  # latentdiff.models.hub
    target: str
    line: int
    local: bool  # inside a function
    why: bool  # a comment on its line or above its block of imports


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _targets(node, source: str, known) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing package
        pkg = source.split(".")[
            : len(source.split(".")) - node.level + (source in known and known[source].name == "__init__.py")
        ]
        base = ".".join(pkg + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def _has_reason(lines: list[str], node) -> bool:
    """A comment on the import's lines, or on the line above it or above its block of imports."""
    if any("#" in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1)):
        return True
    i = node.lineno - 1
    while i >= 1 and re.match(r"\s*(from\s+\S+\s+)?import\s", lines[i - 1]):
        i -= 1
    return i >= 1 and lines[i - 1].strip().startswith("#")


def imports_of(source: str, path: Path, known) -> list[Import]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []

    def visit(node, local: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only; never run
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, source, known):
                    if target.split(".")[0] == "latentdiff" and target in known:
                        out.append(Import(source, target, child.lineno, local, _has_reason(lines, child)))
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(text), False)
    return out


def all_imports() -> list[Import]:
    known = modules()
    found = [imp for name, path in known.items() for imp in imports_of(name, path, known)]
    return list(dict.fromkeys(found))  # `from m import a, b`: once


def layer_violations(imports) -> list[str]:
    out = []
    for imp in imports:
        src, dst = layer(imp.source), layer(imp.target)
        if src == dst or src in ("__init__", "cli"):
            continue
        bad = dst not in ALLOWED[src] if src in ALLOWED else dst in FORBIDDEN.get(src, set())
        if bad:
            out.append(f"{where(imp)}: {src} may not import {dst} ({imp.target})")
    return out


def unexplained_local(imports) -> list[str]:
    return [
        f"{where(imp)}: function-local import of {imp.target} without a comment saying why"
        for imp in imports
        if imp.local and not imp.why
    ]


def where(imp: Import) -> str:
    return f"{imp.source.replace('.', '/')}.py:{imp.line}"


def cycles(imports) -> list[str]:
    """One cycle through each strongly connected group of modules (Tarjan), with the lines."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.target != imp.source:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index, low, stack, on, groups = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [_cycle_text(graph, group) for group in groups]


def _cycle_text(graph, group: set) -> str:
    """The shortest cycle from the group's first module back to itself (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, {})):
            if w == start:
                path = paths[v] + [start]
                steps = [f"{a} ({where(graph[a][b])})" for a, b in zip(path, path[1:])]
                return f"cycle among {len(group)} modules: " + " -> ".join(steps) + f" -> {start}"
            if w in group and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return f"cycle among {sorted(group)}"


def violations() -> dict[str, list[str]]:
    imports = all_imports()
    return {"cycles": cycles(imports), "layers": layer_violations(imports), "unexplained": unexplained_local(imports)}


def test_the_reader_finds_what_it_must():
    """The checks can fail: a planted cycle, a layer breach and a bare local import are caught."""
    imps = [
        Import("latentdiff.models.a", "latentdiff.formats.b", 3, False, False),
        Import("latentdiff.formats.b", "latentdiff.models.a", 9, True, False),
    ]
    assert cycles(imps) and "latentdiff.formats.b" in cycles(imps)[0]
    assert layer_violations(imps) == ["latentdiff/models/a.py:3: models may not import formats (latentdiff.formats.b)"]
    assert unexplained_local(imps) == [
        "latentdiff/formats/b.py:9: function-local import of latentdiff.models.a without a comment saying why"
    ]
    assert len(all_imports()) > 100


@pytest.mark.parametrize("kind", ["cycles", "layers", "unexplained"])
def test_layers(kind):
    found = violations()[kind]
    assert not found, f"{len(found)} {kind}:\n" + "\n".join(found)


def test_the_model_call_contract_needs_only_torch():
    """sampling/model_call.py is what a family, a control or an adapter implements against: it imports
    torch and the standard library, nothing of latentdiff (errors aside)."""
    import ast

    tree = ast.parse((PACKAGE / "sampling" / "model_call.py").read_text(encoding="utf-8"))
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names <= {"__future__", "dataclasses", "typing", "torch", "latentdiff.errors"}, names


if __name__ == "__main__":
    for kind, found in violations().items():
        print(f"== {kind}: {len(found)}")
        print("\n".join(found))
