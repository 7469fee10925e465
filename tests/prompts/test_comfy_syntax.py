"""prompt_syntax "comfy": ComfyUI's weights as its comfy/sd1_clip.py documents them (token_weights'
own examples), its chunk placement, and its weighting of the encoder's output ((z - z_empty) * w +
z_empty) against the formula computed here from the text encoder itself."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentdiff.prompts.chunks import prompt_chunks
from latentdiff.prompts.comfy_syntax import parse_comfy


@pytest.mark.parametrize(
    "text, expected",
    [  # the examples of ComfyUI's token_weights docstring
        ("(foo)", [("foo", 1.1)]),
        ("(foo)(bar)", [("foo", 1.1), ("bar", 1.1)]),
        ("(foo:2.0)", [("foo", 2.0)]),
        ("((foo))", [("foo", 1.1 * 1.1)]),
        ("((foo):1.1)", [("foo", 1.1 * 1.1)]),
        ("((foo:1.1))", [("foo", 1.1)]),
        ("(foo:0.0)", [("foo", 0.0)]),
        ("((foo:1.0):0.0)", [("foo", 1.0)]),
        ("foo ((((lol (cat:666) attack:100)))) baz", [("foo ", 1), ("lol ", 100), ("cat", 666), (" attack", 100), (" baz", 1)]),
        ("foo ((((lol (cat:666) attack):100))) baz", [("foo ", 1), ("lol ", 110.00000000000001), ("cat", 666), (" attack", 110.00000000000001), (" baz", 1)]),
        # not ComfyUI syntax: square brackets, BREAK, A1111's editing stay text
        ("[a] BREAK [b:c:2]", [("[a] BREAK [b:c:2]", 1.0)]),
        # a weight that is not finite is text (a deliberate difference: ComfyUI would make NaN images)
        ("(x:nan)", [("x:nan", 1.1)]),
    ],
)  # fmt: skip
def test_weights_as_comfyui_documents_them(text, expected):
    assert parse_comfy(text) == expected


def test_escaped_brackets_are_text(pipe_sd1):
    tok = pipe_sd1.components.tokenizer
    assert prompt_chunks(tok, r"\(a\)", "comfy") == prompt_chunks(tok, "(a)", "plain")


def test_deep_nesting_does_not_recurse():
    assert parse_comfy("(" * 3000 + "x" + ")" * 3000)[0][0] == "x"


def test_a_short_run_moves_to_the_next_chunk_a_long_one_is_split(pipe_sd1):
    tok = pipe_sd1.components.tokenizer  # "a", "b", "c", "d" are one token each in the tiny vocabulary
    (a, b, d) = (tok("a b d", add_special_tokens=False).input_ids[i] for i in range(3))
    moved = prompt_chunks(tok, "a " * 73 + "(b b b d:1.2)", "comfy")
    assert [len(ids) for ids, _ in moved] == [73, 4]
    assert moved[1] == ([b, b, b, d], [1.2] * 4)
    split = prompt_chunks(tok, "a " * 70 + "(" + "b " * 10 + ":1.5)", "comfy")
    assert [len(ids) for ids, _ in split] == [75, 5]
    assert split[0][0][-5:] == [b] * 5 and split[0][1][-6:] == [1.0] + [1.5] * 5


def test_weighted_embedding_is_comfyuis_formula(pipe_sd1):
    """(z - z_empty) * w + z_empty on the weighted tokens only, z_empty the empty prompt's encoding at
    each position; the other tokens as the unweighted prompt's."""
    c = pipe_sd1.components
    tok, te = c.tokenizer, c.text_encoder
    ids = tok("a red square", padding="max_length", max_length=77, return_tensors="pt").input_ids
    empty = tok("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        z, z_empty = te(ids).last_hidden_state[0], te(empty).last_hidden_state[0]
    red = [2, 3]  # "red" is two tokens, after BOS and "a"
    expected = z.clone()
    expected[red] = (z[red] - z_empty[red]) * 1.3 + z_empty[red]
    cond, _ = pipe_sd1.conditioning(["a (red:1.3) square"], None, 64, 64, "comfy", 1)
    torch.testing.assert_close(cond.hidden[0], expected, rtol=0, atol=1e-6)
    a1111, _ = pipe_sd1.conditioning(["a (red:1.3) square"], None, 64, 64, "a1111", 1)
    assert not torch.allclose(a1111.hidden[0], expected)  # A1111's emphasis is another formula


def _recursive(text: str, weight: float = 1.0) -> list:
    """The rule read the direct way (quadratic on deep nesting): split at top-level brackets, each
    bracketed item read again inside at its weight (x 1.1, or the number after its last ':')."""
    items, current, level = [], "", 0
    for char in text:
        if char == "(" and level == 0 and current:
            items.append(current)
            current = ""
        level += {"(": 1, ")": -1}.get(char, 0)
        current += char
        if char == ")" and level == 0:
            items.append(current)
            current = ""
    items += [current] if current else []
    out = []
    for item in items:
        if len(item) < 2 or item[0] != "(" or item[-1] != ")":
            out.append((item, weight))
            continue
        inner, inner_weight = item[1:-1], weight * 1.1
        colon = inner.rfind(":")
        try:
            number = float(inner[colon + 1 :]) if colon > 0 else None
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            inner, inner_weight = inner[:colon], number
        out += _recursive(inner, inner_weight)
    return out


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="()::1.2ea \\\\", max_size=40))
def test_linear_reading_is_the_recursive_rule(text):
    escaped = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    assert parse_comfy(text) == _recursive(escaped)


def test_reading_is_linear():
    import time

    for text in (
        "(" * 50_000 + "x" + ")" * 50_000,
        "((a:1)" * 20_000,
        ":" * 10_000 + "(" * 10_000 + "1" + ")" * 10_000,
    ):
        start = time.perf_counter()
        parse_comfy(text)
        assert time.perf_counter() - start < 2.0
