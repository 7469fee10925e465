"""`latentdiff generate` on a tiny FLUX.2 klein folder: the CLI path end to end, the PNG's record
and infotext, `--from` replaying it to the same pixels, and the bad inputs' one line."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_generate_writes_klein_images_that_from_replays(tiny_klein, tmp_path, generate, run_main):
    from latentdiff.images.write import read_params

    code, out, err = generate(tiny_klein, tmp_path / "a", "--width", "48", "--height", "32", "--guidance", "3")
    assert code == 0, err
    path = out.split()[0]
    recorded = read_params(path)
    assert (recorded["guidance"], recorded["steps"], recorded["seed"]) == (3.0, 2, 3)
    assert recorded["scheduler_class"] == "FlowMatchEulerDiscreteScheduler"
    assert "CFG scale: 3.0, Seed: 3, Size: 48x32" in Image.open(path).text["parameters"]
    code, out, err = run_main(["generate", "--from", path, "--out", tmp_path / "b", "--quiet"])
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out.split()[0])), np.asarray(Image.open(path)))


def test_klein_refuses_what_it_cannot_take_in_one_line(tiny_klein, tmp_path, generate):
    for flags, words in (
        (["--width", "42"], "not a multiple of 4"),
        (["--clip-skip", "2"], "clip_skip does not apply to FLUX.2"),
        (["--true-cfg", "2", "--negative", "x"], "true_cfg 2 does not apply to FLUX.2 klein"),
        (["--scheduler", "euler"], "samples with its own flow-matching Euler scheduler"),
    ):
        code, _, err = generate(tiny_klein, tmp_path, *flags)
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not any(tmp_path.iterdir())
