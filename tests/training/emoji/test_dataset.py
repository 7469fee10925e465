"""Tests for the Noto Color Emoji dataset builder (latentdiff/training/emoji/dataset.py).

Parsing and the held-out split run anywhere. Rendering needs the Debian font package
(see emoji_names.APT_COMMAND); without it those tests are skipped, so CI must install it.
"""

import json

import pytest
from conftest import run_cli
from PIL import Image

import latentdiff.training.emoji.dataset as emoji
import latentdiff.training.emoji.names as emoji_names
from latentdiff.errors import UsageError

TONES = emoji_names.SKIN_TONES
MOD = {
    "light skin tone": "1F3FB",
    "medium-light skin tone": "1F3FC",
    "medium skin tone": "1F3FD",
    "medium-dark skin tone": "1F3FE",
    "dark skin tone": "1F3FF",
}

needs_font = pytest.mark.skipif(
    not emoji.DEFAULT_FONT.is_file(), reason=f"{emoji.DEFAULT_FONT} missing; install with `{emoji_names.APT_COMMAND}`"
)


def line(codepoints, status, name):
    chars = "".join(chr(int(cp, 16)) for cp in codepoints.split())
    return f"{codepoints:<40} ; {status:<20} # {chars} E1.0 {name}"


def toned(base_cp, base, tones):
    return [line(f"{base_cp} {MOD[t]}", "fully-qualified", f"{base}: {t}") for t in tones]


def synthetic_lines():
    """A small emoji-test.txt. Comments say what each part is there to catch."""
    return [
        "# emoji-test.txt",
        "# Version: 15.0",
        "",
        "# group: Food & Drink",
        "# subgroup: food-fruit",
        line("1F34E", "fully-qualified", "red apple"),
        line("1F1E8 1F1F1", "fully-qualified", "flag: Chile"),
        "# group: People & Body",
        "# subgroup: hand-fingers-open",
        line("1F44B", "fully-qualified", "waving hand"),
        *toned("1F44B", "waving hand", TONES),  # base k=0: holds out light
        line("1F3FB", "component", "light skin tone"),  # component: excluded
        # a two-tone name is not a base; counting it would shift every later base
        line("1FAF1 1F3FB 200D 1FAF2 1F3FF", "fully-qualified", "handshake: light skin tone, dark skin tone"),
        # not fully-qualified: excluded, and must not become a base either
        line("270C 1F3FB", "unqualified", "victory hand: light skin tone"),
        line("263A", "unqualified", "smiling face"),
        line("1F636 200D 1F32B", "minimally-qualified", "face in clouds"),
        *toned("1F44D", "thumbs up", TONES),  # base k=1: medium-light
        line("1F468 1F3FB 200D 1F9B0", "fully-qualified", "man: light skin tone, red hair"),
        # base k=2 wants medium, which it lacks: nothing held out for it
        *toned("1F442", "ear", ["light skin tone", "dark skin tone"]),
        *toned("1F443", "nose", TONES),  # base k=3: medium-dark
        *toned("1F9B6", "foot", ["light skin tone", "dark skin tone"]),  # k=4: dark
        *toned("1F9B5", "leg", ["light skin tone", "medium skin tone"]),  # k=5 wraps: light
    ]


@pytest.fixture
def emoji_test(tmp_path):
    path = tmp_path / "emoji-test.txt"
    path.write_text("\n".join(synthetic_lines()) + "\n", encoding="utf-8")
    return path


def test_parse_keeps_only_fully_qualified_lines_with_exact_names(emoji_test):
    emojis = emoji_names.parse_emoji_test(emoji_test)
    names = [e.name for e in emojis]
    assert names[:3] == ["red apple", "flag: Chile", "waving hand"]
    assert "handshake: light skin tone, dark skin tone" in names
    for excluded in ["light skin tone", "victory hand: light skin tone", "smiling face", "face in clouds"]:
        assert excluded not in names
    assert len(names) == 3 + 5 + 1 + 5 + 1 + 2 + 5 + 2 + 2
    assert [e.index for e in emojis] == list(range(len(emojis)))
    chile = emojis[1]
    assert (chile.codepoints, chile.group, chile.subgroup) == ("1F1E8 1F1F1", "Food & Drink", "food-fruit")
    assert chile.chars == "\U0001f1e8\U0001f1f1"
    assert emojis[-1].group == "People & Body"


def test_single_skin_tone_needs_exactly_one_tone_after_the_last_colon():
    assert emoji_names.single_skin_tone("woman biking: dark skin tone") == ("woman biking", "dark skin tone")
    assert emoji_names.single_skin_tone("handshake: light skin tone, dark skin tone") is None
    assert emoji_names.single_skin_tone("man: light skin tone, red hair") is None
    assert emoji_names.single_skin_tone("light skin tone") is None
    assert emoji_names.single_skin_tone("flag: Chile") is None


def test_heldout_rotates_through_tones_per_base(emoji_test):
    held = emoji_names.heldout_names(emoji_names.parse_emoji_test(emoji_test))
    assert held == {
        "waving hand: light skin tone",
        "thumbs up: medium-light skin tone",
        "nose: medium-dark skin tone",
        "foot: dark skin tone",
        "leg: light skin tone",
    }


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "emoji-test.txt"
    path.write_text("# group: X\n1F34E fully-qualified red apple\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"emoji-test.txt:2:"):
        emoji_names.parse_emoji_test(path)


def test_missing_inputs_say_how_to_install(tmp_path, emoji_test):
    with pytest.raises(UsageError, match="apt-get install -y fonts-noto-color-emoji"):
        emoji_names.parse_emoji_test(tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="fonts-noto-color-emoji.*--font"):
        emoji.build_emoji_dataset(tmp_path / "out", emoji_test, tmp_path / "nope.ttf")


@needs_font
@pytest.mark.parametrize(
    "codepoints",
    [
        "1F34E",  # red apple
        "1F1E8 1F1F1",  # flag: Chile, two regional indicators
        "1F3F4 E0067 E0062 E0065 E006E E0067 E007F",  # flag: England, tag sequence
        "1F468 200D 1F469 200D 1F467 200D 1F466",  # family: man, woman, girl, boy
        "1F6B4 1F3FF 200D 2640 FE0F",  # woman biking: dark skin tone
    ],
)
def test_sequences_render_as_one_glyph_on_white(codepoints):
    font = emoji.load_emoji_font()
    chars = "".join(chr(int(cp, 16)) for cp in codepoints.split())
    image, width = emoji.render_emoji(chars, font)
    assert (image.size, image.mode) == ((64, 64), "RGB")
    assert 0 < width <= emoji.glyph_cell_width(font)
    assert image.getpixel((0, 0)) == image.getpixel((63, 63)) == (255, 255, 255)
    bbox = image.point(lambda v: 255 - v).getbbox()  # ink = not white
    assert max(bbox[2] - bbox[0], bbox[3] - bbox[1]) in (55, 56, 57)


@needs_font
def test_skin_tones_differ_and_broken_sequences_are_wide():
    font = emoji.load_emoji_font()
    light, _ = emoji.render_emoji("\U0001f44b\U0001f3fb", font)
    dark, _ = emoji.render_emoji("\U0001f44b\U0001f3ff", font)
    assert light.tobytes() != dark.tobytes()
    # two apples joined by ZWJ is no emoji: the font draws two glyphs side by side
    _, width = emoji.render_emoji("\U0001f34e\u200d\U0001f34e", font)
    assert width > emoji.FELL_APART_RATIO * emoji.glyph_cell_width(font)


@needs_font
def test_build_writes_deterministic_imagefolder(tmp_path, emoji_test, capsys):
    with open(emoji_test, "a", encoding="utf-8") as f:
        f.write(line("1F34E 200D 1F34E", "fully-qualified", "apple pair") + "\n")
        f.write(line("10FFFD", "fully-qualified", "no such glyph") + "\n")
    with pytest.warns(UserWarning) as warned:
        summary = emoji.main([str(tmp_path / "a"), "--emoji-test", str(emoji_test)])
    assert [str(w.message)[:30] for w in warned] == ["1 emoji fell apart into severa", "1 emoji rendered blank and wer"]
    assert (summary["fell_apart"], summary["blank"]) == (["apple pair"], ["no such glyph"])
    assert "images: 26" in capsys.readouterr().out
    records = [json.loads(x) for x in (tmp_path / "a/metadata.jsonl").read_text().splitlines()]
    assert len(records) == summary["images"] == 26 and summary["heldout"] == 5
    assert records[1] == {
        "file_name": "images/0002.png",
        "text": "flag: Chile",
        "split": "train",
        "group": "Food & Drink",
        "subgroup": "food-fruit",
        "codepoints": "1F1E8 1F1F1",
        "alt_texts": ["flag: Chile, food-fruit", "flag: Chile, food & drink"],
    }
    assert {r["text"] for r in records if r["split"] == "heldout"} == emoji_names.heldout_names(
        emoji_names.parse_emoji_test(emoji_test)
    )
    readme = (tmp_path / "a/README.md").read_text()
    assert "SIL Open Font License 1.1" in readme and "Apache License 2.0" in readme
    with pytest.warns(UserWarning):
        emoji.build_emoji_dataset(tmp_path / "b", emoji_test, variants=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 26
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in files_a)
    assert "alt_texts" not in (tmp_path / "b/metadata.jsonl").read_text()


@needs_font
def test_size_128_for_the_super_resolution_stage(tmp_path, emoji_test):
    font = emoji.load_emoji_font()
    big, _ = emoji.render_emoji("\U0001f34e", font, 128)
    assert (big.size, big.getpixel((127, 127))) == ((128, 128), (255, 255, 255))
    bbox = big.point(lambda v: 255 - v).getbbox()
    assert max(bbox[2] - bbox[0], bbox[3] - bbox[1]) in (111, 112, 113)  # the 64 px glyph's margin, doubled
    small = emoji.build_emoji_dataset(tmp_path / "s", emoji_test)
    built = run_cli("build-emoji", tmp_path / "l", "--emoji-test", emoji_test, "--size", "128")  # the card's command
    assert built.returncode == 0 and "size: 128" in built.stdout, built.stderr
    assert f"images: {small['images']}" in built.stdout
    pairs = (tmp_path / "s/metadata.jsonl").read_text(), (tmp_path / "l/metadata.jsonl").read_text()
    assert pairs[0] == pairs[1]  # the same emoji under the same file names: low/high-res pairs
    assert Image.open(next((tmp_path / "l/images").glob("*.png"))).size == (128, 128)
    with pytest.raises(UsageError, match="multiple of 8 from 16 to 128"):
        emoji.build_emoji_dataset(tmp_path / "x", emoji_test, size=136)
