"""A1111 prompt editing and alternation (`prompts/editing.py`): schedules derived by hand from A1111's
documented rules (its wiki and its parser's examples), steps counted as A1111 counts them."""

from __future__ import annotations

import pytest

from latentdiff.prompts.editing import schedule, starts

TABLE = [
    # prompt, steps, schedule as (end_at_step, text)
    ("test", 10, [(10, "test")]),
    ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", 10, [(10, "a [unbalanced")]),
    ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", 4, [(1, "a"), (2, "(b:1.1)"), (3, "a"), (4, "(b:1.1)")]),
    ("[fe|]male", 4, [(1, "female"), (2, "male"), (3, "female"), (4, "male")]),
    ("[fe|||]male", 5, [(1, "female"), (4, "male"), (5, "female")]),
    ("[a:b:0]", 10, [(10, "b")]),  # step 0: `to` from the start
    ("[a:b:10]", 10, [(10, "a")]),  # step >= steps: `from` throughout
    ("[a:b:25]", 10, [(10, "a")]),
    ("[a:b:1.0]", 10, [(10, "a")]),  # with a '.', a fraction: 1.0 is the last step
    ("[a:b:2.0]", 10, [(10, "a")]),
    ("[a:b:0.25]", 20, [(5, "a"), (20, "b")]),
    ("[a:b:-1]", 10, [(10, "b")]),
    ("[a::3]", 10, [(3, "a"), (10, "")]),  # [from::when]
    ("[:b:3]", 10, [(3, ""), (10, "b")]),
    ("[ a : b :5e0]", 10, [(5, " a "), (10, " b ")]),  # a number without '.' is a step
    ("[a:b:1e400]", 10, [(10, "a")]),  # an infinite step is past the end, not a crash
    ("[a|a]", 4, [(4, "a")]),
    ("[a:b:c]", 10, [(10, "[a:b:c]")]),  # not a number: text
    ("[a:b:3:4]", 10, [(10, "[a:b:3:4]")]),
    ("a|b [c:d:2]", 10, [(10, "a|b [c:d:2]")]),  # a '|' outside [..]: the whole prompt is text
    ("(a|b) [c:d:2]", 10, [(10, "(a|b) [c:d:2]")]),
    ("[c:d:2] x\\", 10, [(10, "[c:d:2] x\\")]),  # a backslash escaping nothing: likewise
    ("\\[c:d:2\\] [e:f:2]", 10, [(2, "\\[c:d:2\\] e"), (10, "\\[c:d:2\\] f")]),  # escaped brackets stay
    ("(x [a:b:2]:1.2)", 10, [(2, "(x a:1.2)"), (10, "(x b:1.2)")]),  # editing inside emphasis
    ("[[a|b]:c:3]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "c")]),
    ("[a:b:3]]", 10, [(3, "a]"), (10, "b]")]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), TABLE, ids=[p for p, _, _ in TABLE])
def test_schedule_table(prompt, steps, expected):
    assert schedule(prompt, steps) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a [b:.5] c", [(10, "a b c")]),  # the first pass's fraction is over before the hires pass
        ("a [b:1.5] c", [(5, "a  c"), (10, "a b c")]),  # fractions go on from 1.0
        ("[a:b:15]", [(5, "a"), (10, "b")]),  # step numbers count on from the first pass's 10
        ("[a:b:5]", [(10, "b")]),
        (
            "[a|b]",
            [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (5, "a"), (6, "b"), (7, "a"), (8, "b"), (9, "a"), (10, "b")],
        ),
    ],
)
def test_hires_schedule(prompt, expected):
    assert schedule(prompt, 10, hires_steps=10) == expected


def test_starts_are_a1111s_step_choice():
    """A1111 uses entry k at sampling step i (from 0) while i <= end_at_step: `[a:b:3]` is `a` for
    steps 0..3 and `b` from step 4; alternation shows its first option twice."""
    assert starts(schedule("[a:b:3]", 10)) == [(0, "a"), (4, "b")]
    assert starts(schedule("[a|b]", 4)) == [(0, "a"), (2, "b"), (3, "a"), (4, "b")]
