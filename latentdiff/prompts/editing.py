"""A1111 prompt editing and alternation: `[from:to:when]`, `[to:when]`, `[from::when]`, `[a|b|c]`.

Our own parser with A1111's (1.10, `use_old_scheduling` off) behaviour:

- `when` with a `.` is a fraction of the steps (`0.25`, `.5`, `1.0`), without one a step number;
  `[from:to:when]` reads `from` up to step `when` and `to` after it; nested constructs work.
- `[a|b]` switches every step (step 1 `a`, step 2 `b`, ...); options may be empty (`[fe|]male`).
- `(...)` and `[...]` emphasis stays text for `syntax.parse`; editing inside it still works.
- Unbalanced or malformed brackets stay text. A `|` outside any alternation, or a backslash that
  escapes nothing (at the end, before a newline), makes A1111's grammar fail: then the whole
  prompt is text, one schedule entry.
- With hires fix the schedule is made again for the hires steps: a step number counts on from the
  first pass's steps (`[a:b:25]` after 20 steps switches at hires step 5), a fraction from 1.0 on
  (`[a:b:1.5]` switches half-way through the hires steps).

A schedule is a list of `(end_at_step, text)`: step k (counted from 0) uses the first entry with
k <= end_at_step, as A1111 picks them. The parser is linear: one pass with an explicit stack, a
construct that fails is remembered so its text is read again at most once, no recursion.
"""

from __future__ import annotations

import re

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
_WHEN = re.compile(r"\s*(" + _NUMBER + r")\s*\]")  # what may follow the last ':' of an edit


class _Edit:
    __slots__ = ("before", "after", "when")

    def __init__(self, before, after, when: str):
        self.before, self.after, self.when = before, after, when


class _Alt:
    __slots__ = ("options",)

    def __init__(self, options: list):
        self.options = options


class _Frame:
    """An opened `(` or `[` being read: the prompts read so far and the state it is in."""

    __slots__ = ("start", "kind", "parts", "current", "state")

    def __init__(self, start: int, kind: str):
        self.start, self.kind, self.parts, self.current, self.state = start, kind, [], [], "first"


class _Failed(Exception):
    """The grammar has no parse: the whole prompt is text."""


def parse_tree(text: str) -> list | None:
    """The prompt as nested lists of text, `_Edit` and `_Alt`; None where A1111's grammar fails."""
    try:
        return _Parser(text).run()
    except _Failed:
        return None


class _Parser:
    def __init__(self, text: str):
        self.text, self.memo, self.stack, self.top = text, {}, [], []

    def run(self) -> list:
        text, i = self.text, 0
        while i < len(text) or self.stack:
            if i >= len(text):  # frames never closed: brackets that stay text
                i = self._fail()
                continue
            target = self.stack[-1].current if self.stack else self.top
            m = _PLAIN.match(text, i)
            if m:
                target.append(m.group(0))
                i = m.end()
            elif text[i] == "\\":
                raise _Failed  # a backslash escaping nothing
            elif text[i] in "([":
                i = self._open(i, target)
            elif self.stack:
                i = self._close(i)
            elif text[i] == "|":
                raise _Failed
            else:
                target.append(text[i])  # a stray ')', ']' or ':' at the top level is text
                i += 1
        return self.top

    def _open(self, i: int, target: list) -> int:
        if i not in self.memo:
            self.stack.append(_Frame(i, self.text[i]))
            return i + 1
        done = self.memo[i]
        if done is not None:
            target.append(done[0])
            return done[1]
        if self.stack:
            return self._fail()
        target.append(self.text[i])
        return i + 1

    def _fail(self) -> int:
        """Every open frame fails (a frame cannot hold stray brackets); the outermost one's bracket
        becomes text at the top level and reading goes on after it."""
        for frame in self.stack:
            self.memo[frame.start] = None
        start = self.stack[0].start
        self.stack.clear()
        self.top.append(self.text[start])
        return start + 1

    def _done(self, node, end: int) -> int:
        node = _flat(node)
        frame = self.stack.pop()
        self.memo[frame.start] = (node, end)
        (self.stack[-1].current if self.stack else self.top).append(node)
        return end

    def _close(self, i: int) -> int:
        f, c = self.stack[-1], self.text[i]
        if f.kind == "(":
            if c == ")":
                inner = [f.current] if f.state == "first" else [f.parts[0], ":", f.current]
                return self._done(["(", *inner, ")"], i + 1)
            if c == ":" and f.state == "first":
                f.parts, f.current, f.state = [f.current], [], "second"
                return i + 1
            return self._fail()
        if c == "]" and f.state == "first":
            return self._done(["[", f.current, "]"], i + 1)
        if c == "]" and f.state == "alt":
            return self._done(_Alt([*f.parts, f.current]), i + 1)
        if c == "|" and f.state in ("first", "alt"):
            f.parts, f.current, f.state = [*f.parts, f.current], [], "alt"
            return i + 1
        if c == ":" and f.state in ("first", "second"):
            when = _WHEN.match(self.text, i + 1)
            if when:
                before, after = (None, f.current) if f.state == "first" else (f.parts[0], f.current)
                return self._done(_Edit(before, after, when.group(1)), when.end())
            if f.state == "first":
                f.parts, f.current, f.state = [f.current], [], "second"
                return i + 1
        return self._fail()


def _flat(node):
    """Emphasis holding only text is text: one string to render instead of a subtree."""
    if isinstance(node, list) and all(isinstance(x, str) or (isinstance(x, list) and _is_text(x)) for x in node):
        return "".join(x if isinstance(x, str) else "".join(x) for x in node)
    return node


def _is_text(items: list) -> bool:
    return all(isinstance(x, str) for x in items)


def _nodes(tree):
    """Every node of the tree, without recursion."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, _Edit):
            stack.extend(x for x in (node.before, node.after) if x is not None)
        elif isinstance(node, _Alt):
            stack.extend(node.options)


def _render(tree, step: int, whens: dict) -> str:
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, _Edit):
            chosen = (node.before or []) if step <= whens[id(node)] else node.after
            stack.append(chosen)
        else:
            stack.append(node.options[(step - 1) % len(node.options)])
    return "".join(out)


def schedule(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
    """`(end_at_step, text)` entries for `prompt` sampled in `steps` steps, or in the hires pass of
    `hires_steps` steps after `steps` first-pass steps; neighbours with equal text merged."""
    tree = parse_tree(prompt)
    total = steps if hires_steps is None else hires_steps
    if tree is None:
        return [(total, prompt)]
    int_offset, flt_offset = (0, 0.0) if hires_steps is None else (steps, 1.0)
    ends, whens = {total}, {}
    for node in _nodes(tree):
        if isinstance(node, _Edit):
            v = float(node.when)
            v = (v - flt_offset) * total if "." in node.when else v - int_offset
            whens[id(node)] = total if v >= total else int(max(v, -1.0))  # 1e400 is inf: no int()
            if whens[id(node)] >= 1:
                ends.add(whens[id(node)])
        elif isinstance(node, _Alt):
            ends.update(range(1, total + 1))
    out: list[tuple[int, str]] = []
    for end in sorted(ends):
        text = _render(tree, end, whens)
        if out and out[-1][1] == text:
            out[-1] = (end, text)
        else:
            out.append((end, text))
    return out


def starts(entries: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The entries as `(first_step, text)`, steps counted from 0: entry k starts after entry k-1's end."""
    return [(0 if k == 0 else entries[k - 1][0] + 1, text) for k, (_, text) in enumerate(entries)]
