"""A1111 prompt syntax: parsing (hand-computed cases), token weights, emphasis, clip skip."""

import numpy as np
import pytest
import torch

from latentdiff import UsageError
from latentdiff.families.clip import apply_token_weights
from latentdiff.prompts.chunks import prompt_chunks, tokenize_weighted
from latentdiff.prompts.syntax import BREAK, fragments, parse


def approx(frags):
    return [(t, pytest.approx(w)) for t, w in frags]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("a stray) and ] closer", [("a stray) and ] closer", 1.0)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("[less] more", [("less", 1 / 1.1), (" more", 1.0)]),
        ("((nested)) [[down]]", [("nested", 1.21), (" ", 1.0), ("down", 1 / 1.21)]),
        ("(red:1.5) apple", [("red", 1.5), (" apple", 1.0)]),
        ("(red: -0.5 )", [("red", -0.5)]),
        ("(apple:1.0)", [("apple", 1.0)]),
        ("((apple:1.3))", [("apple", 1.43)]),
        ("a: b", [("a: b", 1.0)]),
        ("(x:1.2.3)", [("x:1.2.3", 1.1)]),  # not a number: text, and the ( still closes with its )
        ("", [("", 1.0)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.1 * 1.1 * 1.3),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.1**4),
                (".", 1.1),
            ],
        ),
    ],
)
def test_parse_matches_a1111(text, expected):
    assert parse(text) == approx(expected)


def test_break_splits_outside_brackets_and_is_a_word_inside():
    """A1111 weights everything inside brackets, its BREAK marker too: `(a BREAK b)` is the word
    BREAK at weight -1.1, no chunk break."""
    assert parse("a cat BREAK a dog") == [("a cat", 1.0), BREAK, ("a dog", 1.0)]
    assert parse("(a BREAK b)") == approx([("a", 1.1), ("BREAK", -1.1), ("b", 1.1)])
    assert parse("[a BREAK b]") == approx([("a", 1 / 1.1), ("BREAK", -1 / 1.1), ("b", 1 / 1.1)])
    assert parse("x BREAK BREAK y") == [("x", 1.0), BREAK, ("", 1.0), BREAK, ("y", 1.0)]
    assert parse("BREAKFAST break") == [("BREAKFAST break", 1.0)]


def test_plain_syntax_keeps_the_text_and_unknown_syntax_is_a_usage_error():
    assert fragments("(red:1.5) \\( BREAK", "plain") == [("(red:1.5) \\( BREAK", 1.0)]
    with pytest.raises(UsageError, match="unknown prompt syntax"):
        fragments("x", "compel")


def test_token_weights_follow_the_fragments(pipe_sd1):
    tok = pipe_sd1.components.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    (chunk,) = prompt_chunks(tok, "a (red:1.5) apple", "a1111")
    assert chunk == (
        ids("a") + ids("red") + ids("apple"),
        [1.0] * len(ids("a")) + [1.5] * len(ids("red")) + [1.0] * len(ids("apple")),
    )
    first, second = prompt_chunks(tok, "a red BREAK apple", "a1111")
    assert first[0] == ids("a red") and second[0] == ids("apple")


def test_long_weighted_prompt_is_chunked_with_its_weights(pipe_sd1):
    tok = pipe_sd1.components.tokenizer
    word = tok("apple", add_special_tokens=False).input_ids
    prompt = "(" + "apple " * 50 + ":0.5) pear"
    chunks = prompt_chunks(tok, prompt, "a1111")
    flat_w = [w for _, ws in chunks for w in ws]
    assert [len(c[0]) for c in chunks][:-1] == [75] * (len(chunks) - 1)
    assert flat_w[: 50 * len(word)] == [0.5] * (50 * len(word)) and flat_w[-1] == 1.0
    ids, weights = tokenize_weighted(tok, [prompt, ""], syntax="a1111")
    assert ids.shape == weights.shape == (2, len(chunks), 77)
    assert weights[:, :, 0].eq(1).all() and weights[1].eq(1).all()


def test_emphasis_scales_tokens_then_restores_the_mean():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])  # mean 3.5
    weights = torch.tensor([[[1.0, 2.0, 1.0]]])  # one prompt, one chunk of 3 tokens
    scaled = torch.tensor([[[1.0, 2.0], [6.0, 8.0], [5.0, 6.0]]])  # mean 28 / 6
    expected = scaled * (3.5 / (28 / 6))
    assert torch.allclose(apply_token_weights(hidden, weights), expected)
    assert apply_token_weights(hidden, torch.ones(1, 1, 3)) is hidden


def test_weight_one_gives_the_same_pixels_and_weights_change_them(pipe_sd1):
    plain = pipe_sd1("a red apple", steps=2, seed=1)[0]
    same = pipe_sd1("a red (apple:1.0)", steps=2, seed=1)[0]
    heavy = pipe_sd1("a red (apple:1.6)", steps=2, seed=1)[0]
    literal = pipe_sd1("a red (apple:1.6)", steps=2, seed=1, prompt_syntax="plain")[0]
    assert np.array_equal(np.asarray(plain), np.asarray(same))
    assert not np.array_equal(np.asarray(plain), np.asarray(heavy))
    assert not np.array_equal(np.asarray(heavy), np.asarray(literal))
    assert heavy.info["latentdiff"]["prompt_syntax"] == "a1111"
    assert literal.info["latentdiff"]["prompt_syntax"] == "plain"


def test_clip_skip_2_is_the_encoder_without_its_last_layer(pipe_sd1):
    import copy

    c = pipe_sd1.components
    shorter = copy.deepcopy(c.text_encoder)
    model = getattr(shorter, "text_model", shorter)
    model.encoder.layers = model.encoder.layers[:-1]  # what A1111's "Clip skip: 2" means
    cond = pipe_sd1.conditioning
    ids = cond.tokenize(["a red apple"])
    ours = cond.embed(ids, clip_skip=2).hidden
    assert torch.allclose(ours, type(cond)([(c.tokenizer, shorter)]).embed(ids).hidden, atol=1e-6)
    assert not torch.allclose(ours, cond.embed(ids).hidden, atol=1e-3)
    assert pipe_sd1("x", steps=1, clip_skip=2)[0].info["latentdiff"]["clip_skip"] == 2


@pytest.mark.parametrize("bad", [0, 3, 1.5])
def test_clip_skip_out_of_range_is_a_usage_error(pipe_sd1, bad):
    with pytest.raises(UsageError, match="clip_skip must be a whole number from 1 .* to 2"):
        pipe_sd1("x", steps=1, clip_skip=bad)


def test_cli_flags_are_recorded_and_replayed(tiny_sd1, tmp_path, capsys):
    from helpers import fails, generate, meta, pixels

    (made,) = generate(
        capsys,
        "(red:1.4) apple",
        "--model",
        tiny_sd1,
        "--out",
        tmp_path / "a",
        "--steps",
        1,
        "--clip-skip",
        2,
        "--prompt-syntax",
        "plain",
    )
    assert (meta(made)["clip_skip"], meta(made)["prompt_syntax"]) == (2, "plain")
    (again,) = generate(capsys, "--from", made, "--out", tmp_path / "b")
    assert np.array_equal(pixels(again), pixels(made))
    # checked from the model's configs before loading, named as the flag
    assert "--clip-skip must be a whole number from 1" in fails(capsys, "x", "--model", tiny_sd1, "--clip-skip", 5)
    assert "--clip-skip must be >= 1" in fails(capsys, "x", "--model", tiny_sd1, "--clip-skip", 0)


def test_break_inside_brackets_is_no_chunk_break(pipe_sd1):
    tok = pipe_sd1.components.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    (chunk,) = prompt_chunks(tok, "(a BREAK b)", "a1111")
    assert chunk[0] == ids("a") + ids("BREAK") + ids("b")
    assert chunk[1] == pytest.approx([1.1] * len(ids("a")) + [-1.1] * len(ids("BREAK")) + [1.1] * len(ids("b")))


def test_a1111_chunks_go_back_to_the_last_comma(pipe_sd1):
    """A tag prompt as A1111 cuts it: `masterpiece` is 11 tokens here, a tag with its comma 12. Six
    tags fill 72 tokens; the seventh would cross 75, so the chunk ends after the sixth comma (3
    tokens back, within 20) and the seventh tag starts the next chunk whole."""
    tok = pipe_sd1.components.tokenizer
    tag = tok("masterpiece", add_special_tokens=False).input_ids
    comma = tok(",", add_special_tokens=False).input_ids
    assert len(tag) == 11 and len(comma) == 1
    prompt = ", ".join(["masterpiece"] * 8)
    first, second = prompt_chunks(tok, prompt, "a1111")
    assert first[0] == (tag + comma) * 6 and second[0] == (tag + comma) + tag
    # plain: cut at 75 whatever the text
    first, second = prompt_chunks(tok, prompt, "plain")
    assert len(first[0]) == 75 and first[0] + second[0] == (tag + comma) * 7 + tag


def test_a1111_chunks_cut_at_75_when_the_comma_is_far(pipe_sd1):
    """A comma more than 20 tokens back is not gone back to; a comma that is itself the 76th token
    starts the next chunk."""
    tok = pipe_sd1.components.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    prompt = "pear, " + "apple " * 30
    first, second = prompt_chunks(tok, prompt, "a1111")
    assert len(first[0]) == 75 and first[0] + second[0] == ids(prompt)
    long = ids("red " * 37 + "a")  # 37 x 2 + 1 tokens: the comma after them is the 76th
    assert len(long) == 75
    first, second = prompt_chunks(tok, "red " * 37 + "a, red", "a1111")
    assert first[0] == long and second[0] == ids(", red")
