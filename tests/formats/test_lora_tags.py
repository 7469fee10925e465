"""`<lora:NAME:W>` prompt tags (formats/lora_tags.py): the pixels of `--lora FILE:W`, the weights
restored after the call, the tag out of the text, one line for a name not in --lora-dir."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_lora_files import kohya_file, load, weight

from latentdiff import Pipeline, UsageError
from latentdiff.formats.lora_tags import strip_tags

KW = {"steps": 2, "seed": 1, "width": 64, "height": 64, "prompt_syntax": "a1111"}


@pytest.fixture(scope="module")
def tagged(tiny_sd1, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    (folder / "sub").mkdir()
    kohya_file(folder / "sub" / "style.safetensors")
    p = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32", lora_dir=folder)
    p.progress = False
    return p, folder


def px(pipe, prompt):
    return np.asarray(pipe(prompt, **KW)[0], dtype=np.int16)


def test_tag_pixels_are_the_lora_flags_and_the_weights_come_back(tagged, tiny_sd1):
    pipe, folder = tagged
    before = weight(pipe, "unet").detach().clone(), weight(pipe, "te").detach().clone()
    tagged_px = px(pipe, "red apple <lora:style:0.7>")
    flagged = load(tiny_sd1, f"{folder / 'sub' / 'style.safetensors'}:0.7")
    assert np.array_equal(tagged_px, px(flagged, "red apple"))
    assert torch.equal(weight(pipe, "unet"), before[0]) and torch.equal(weight(pipe, "te"), before[1])
    assert np.array_equal(px(pipe, "red apple"), px(load(tiny_sd1), "red apple"))


def test_text_encoder_and_unet_weights_apart(tagged):
    pipe, _ = tagged
    both = px(pipe, "red apple <lora:style:0.7>")
    assert np.array_equal(both, px(pipe, "red apple <lora:style:0.7:0.7>"))
    assert not np.array_equal(both, px(pipe, "red apple <lora:style:0:0.7>"))


def test_a_name_not_in_the_folder_is_one_line(tagged):
    pipe, folder = tagged
    with pytest.raises(UsageError, match=rf"<lora:nope:1>: no LoRA file nope.* in {folder}$"):
        pipe("x <lora:nope:1>", **KW)
    with pytest.raises(UsageError, match="only <lora:...> tags"):
        pipe("x <hypernet:h:1>", **KW)
    with pytest.raises(UsageError, match="not a weight"):
        pipe("x <lora:style:strong>", **KW)


def test_strip_tags_is_a1111s_expression():
    assert strip_tags("a <lora:x:0.5> b <lora:y> c") == ("a  b  c", [("lora", ["x", "0.5"]), ("lora", ["y"])])
    assert strip_tags("a <lora:> <b:c") == ("a <lora:> <b:c", [])
    assert strip_tags("<x <lora:a:1>>") == ("<x >", [("lora", ["a", "1"])])


def test_cli_lora_dir_and_from_replays_it(tagged, tiny_sd1, tmp_path):
    """--lora-dir on the command line; the PNG records it, so --from gives the same picture."""
    from PIL import Image

    from latentdiff.cli.main import main

    _, folder = tagged
    out = tmp_path / "out"
    args = [
        "generate",
        "red apple <lora:style:0.7>",
        "--model",
        str(tiny_sd1),
        "--steps",
        "2",
        "--seed",
        "1",
        "--width",
        "64",
        "--height",
        "64",
    ]
    assert main([*args, "--lora-dir", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    (png,) = out.glob("*.png")
    again = tmp_path / "again"
    assert main(["generate", "--from", str(png), "--out", str(again), "--device", "cpu"]) == 0
    (png2,) = again.glob("*.png")
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(png2)))
    assert main([*args, "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2


def test_from_an_a1111_image_reads_its_tags_from_the_lora_dir(tagged, tiny_sd1, tmp_path, capsys):
    """An A1111 line's <lora:...> tags stay in the prompt: with --lora-dir, the pixels of the tagged
    prompt and "Lora hashes" written again; without it, one line before the model loads."""
    from a1111_files import exif_block, jpeg_with, user_comment
    from helpers import generate, pixels

    from latentdiff.cli.main import main

    pipe, folder = tagged
    line = "red apple <lora:style:0.7>\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, ENSD: 31337"
    f = tmp_path / "a1111.jpg"
    f.write_bytes(jpeg_with(exif_block(user_comment(line))))
    assert main(["generate", "--from", str(f), "--model", str(tiny_sd1), "--quiet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the --from notes, then the refusal before loading
    assert err[-1] == (
        "latentdiff: error: <lora:style:0.7> names a LoRA by file name: give the folder of LoRA files with --lora-dir"
    )
    assert all(x.startswith("latentdiff: note: ") for x in err[:-1])
    (made,) = generate(capsys, "--from", f, "--model", tiny_sd1, "--lora-dir", folder, "--out", tmp_path / "o")
    expected = pipe("red apple <lora:style:0.7>", **{**KW, "scheduler": "euler_a", "guidance": 7.0})[0]
    assert np.array_equal(pixels(made), np.asarray(expected))
    assert (
        expected.info["parameters"].count("<lora:style:0.7>") == 1
        and 'Lora hashes: "style: ' in expected.info["parameters"]
    )
