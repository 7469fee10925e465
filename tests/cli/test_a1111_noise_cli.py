"""`generate --rng/--variation-seed/--variation-strength/--seed-resize-from/--ensd` (A1111's own path):
recorded, written to the A1111 line as A1111 writes them, replayed by --from to the same pixels (also
from the A1111 line alone); A1111's lines read back to the same options; bad values: exit 2, one line."""

import numpy as np
import pytest
from helpers import fails, generate, made_and_replayed, pixels
from PIL import Image, PngImagePlugin

from latentdiff.images.infotext import params_from_a1111

NOISE = ("--rng", "nv", "--variation-seed", 40, "--variation-strength", 0.3, "--seed-resize-from", "32x48",
         "--ensd", 31337)  # fmt: skip


def test_noise_options_are_recorded_written_and_replayed(capsys, tmp_path, tiny_sd1):
    meta, fields = made_and_replayed(
        capsys, tmp_path, "a cat", "--model", tiny_sd1, "--scheduler", "DPM++ 2S a", *NOISE
    )
    assert {k: meta[k] for k in ("rng", "variation_seed", "variation_strength", "seed_resize_from", "ensd")} == {
        "rng": "nv", "variation_seed": 40, "variation_strength": 0.3, "seed_resize_from": [32, 48], "ensd": 31337
    }  # fmt: skip
    assert (fields["Sampler"], fields["RNG"], fields["ENSD"]) == ("DPM++ 2S a", "NV", "31337")
    assert (fields["Variation seed"], fields["Variation seed strength"], fields["Seed resize from"]) == (
        "40",
        "0.3",
        "32x48",
    )


def test_the_a1111_line_alone_replays_a1111s_path(capsys, tmp_path, tiny_sd1):
    (made,) = generate(capsys, "a cat", "--model", tiny_sd1, "--scheduler", "euler_a", "--rng", "cpu", "--steps", 2,
                       "--out", tmp_path / "a")  # fmt: skip
    bare = tmp_path / "bare.png"
    with Image.open(made) as im:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", im.text["parameters"])
        im.save(bare, pnginfo=info)
    (again,) = generate(capsys, "--from", bare, "--model", tiny_sd1, "--out", tmp_path / "b")
    assert np.array_equal(pixels(again), pixels(made))


def test_variation_strength_keeps_the_seed_and_counts_the_variation_seeds(capsys, tmp_path, tiny_sd1):
    made = generate(capsys, "a cat", "--model", tiny_sd1, "--scheduler", "euler", "--variation-seed", 7,
                    "--variation-strength", 0.5, "--num-images", 2, "--steps", 2, "--out", tmp_path)  # fmt: skip
    with Image.open(made[1]) as im:
        assert "Seed: 0," in im.text["parameters"] and "Variation seed: 8," in im.text["parameters"]


A1111_LINE = "a dog\nSteps: 20, Sampler: {sampler}, CFG scale: 7, Seed: 5, Size: 512x512, {extra}Version: v1.10.1"


@pytest.mark.parametrize(
    "sampler, extra, want",
    [
        ("Euler a", "", {"rng": "nv"}),  # A1111's default noise source, the GPU: its numbers, as NV
        ("Euler a", "RNG: CPU, ENSD: 31337, ", {"rng": "cpu", "ensd": 31337}),
        ("DPM++ 2S a", "Variation seed: 9, Variation seed strength: 0.25, Seed resize from: 256x384, ",
         {"rng": "nv", "variation_seed": 9, "variation_strength": 0.25, "seed_resize_from": "256x384"}),
        ("DDIM", "RNG: CPU, Eta DDIM: 0.5, ", {"rng": "cpu"}),  # A1111's timestep samplers run there too
        ("DDPM", "RNG: CPU, ", {}),  # not A1111's: the parameters only, on diffusers' path
        ("Euler a", "Mask blur: 4, RNG: CPU, ", {"rng": "cpu"}),  # inpainting the whole picture
        ("Euler a", "Mask blur: 4, Inpaint area: Only masked, RNG: CPU, ", {"rng": "cpu"}),  # the masked area
    ],
)  # fmt: skip
def test_a1111_lines_read_back_to_our_noise_options(sampler, extra, want):
    params, notes = params_from_a1111(A1111_LINE.format(sampler=sampler, extra=extra))
    keys = ("rng", "variation_seed", "variation_strength", "seed_resize_from", "ensd")
    assert {k: params[k] for k in keys if k in params} == want
    assert any("different pixels" in n for n in notes) == (not want)


@pytest.mark.parametrize(
    "flags, words",
    [
        (("--rng", "tpu"), "invalid choice: 'tpu'"),
        (("--variation-strength", "1.5"), "--variation-strength must be <= 1"),
        (("--seed-resize-from", "512"), "--seed-resize-from must be WIDTHxHEIGHT"),
        (("--seed-resize-from", "4x4"), "at least 8x8"),
        (("--ensd", "-1"), "--ensd must be >= 0"),
        (("--rng", "cpu", "--scheduler", "ddpm"), "DDPM is none of them: choose one of Euler"),
        (("--rng", "cpu", "--scheduler", "euler_a", "--eta", "0.5", "--s-noise", "x"), "s-noise"),
    ],
)
def test_bad_noise_options_exit_2_in_one_line(capsys, tiny_sd1, flags, words):
    assert words in fails(capsys, "x", "--model", tiny_sd1, "--steps", 1, *flags)
