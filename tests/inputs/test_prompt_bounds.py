"""Prompt editing (`prompts/editing.py`) is bounded: deep nesting and long prompts finish in well
under a second, no RecursionError; fuzzed prompts never raise."""

from __future__ import annotations

import time

import pytest
from helpers import memory_cap
from hypothesis import given, settings
from hypothesis import strategies as st

from latentdiff.formats.lora_tags import strip_tags
from latentdiff.prompts.composable import split_and
from latentdiff.prompts.editing import schedule

N = 10_000
PROMPTS = {
    "nested edits": "[a:" * (N // 6) + "b:1]" * (N // 6),
    "nested alternation": "[a|" * (N // 6) + "b]" * (N // 6),
    "unclosed": "[" * N,
    "unclosed round": "(" * N,
    "closers": "]" * N + ")" * N,
    "failing deep": "[(" * (N // 2) + "|",
    "colons": "[a" + ":" * N + "1]",
    "spaces before when": "[a:" + " " * N + "x]",
    "many alternations": "[a|b] " * (N // 6),
    "many edits": "".join(f"[x{k}:y{k}:{k % 30}]" for k in range(N // 12)),
}


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_long_prompts_are_scheduled_quickly(prompt):
    start = time.perf_counter()
    with memory_cap(2**30):
        entries = schedule(prompt, 30)
    assert time.perf_counter() - start < 1.0  # about 0.1 s alone; the suite shares its CPUs
    assert entries[-1][0] == 30


FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=400)
PIECES = [
    "<lora:",
    ">",
    "<",
    "[",
    "]",
    "(",
    ")",
    ":",
    "|",
    "\\",
    " ",
    "a",
    "b c",
    "0.5",
    "3",
    ".",
    "-1",
    "1e9",
    "\n",
    "AND",
    "BREAK",
]


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.integers(1, 40), st.one_of(st.none(), st.integers(1, 40)))
def test_fuzzed_prompts_never_raise(pieces, steps, hires_steps):
    """Tags out, AND split, each sub-prompt scheduled: what scheduled_conditioning does to a text."""
    with memory_cap(2**30):
        text, _ = strip_tags("".join(pieces))
        for sub, weight in split_and(text):
            entries = schedule(sub, steps, hires_steps)
            ends = [e for e, _ in entries]
            assert ends == sorted(set(ends)) and ends[-1] == (hires_steps or steps) and ends[0] >= 1
            assert weight == weight  # a number, never NaN


MiB = 2**20


@pytest.mark.parametrize(
    "prompt",
    ["<lora:" * (MiB // 6), "<a:" + "b" * MiB, "x" + " " * MiB + ":1", ("AND " + " " * 1000) * 1000, ":" * MiB],
    ids=["heads", "no close", "spaces before weight", "ands", "colons"],
)
def test_tags_and_weights_are_linear(prompt):
    start = time.perf_counter()
    with memory_cap(2**30):
        text, _ = strip_tags(prompt)
        split_and(text)
    assert time.perf_counter() - start < 2.0
