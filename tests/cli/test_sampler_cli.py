"""`generate --scheduler/--schedule-type/--eta/--s-noise`: recorded, written as A1111 1.10 does, replayed
by --from to the same pixels (also from the A1111 line alone); bad names: exit 2, one line."""

import numpy as np
from helpers import fails, generate, made_and_replayed, pixels
from PIL import Image


def test_a_sampler_with_a_schedule_and_options_is_recorded_and_replayed(capsys, tmp_path, tiny_sd1):
    args = ("a cat", "--model", tiny_sd1, "--scheduler", "DPM++ 2M SDE", "--schedule-type", "Karras")
    meta, fields = made_and_replayed(capsys, tmp_path, *args)
    assert meta["scheduler"] == "dpm++2m_sde_karras"
    assert (fields["Sampler"], fields["Schedule type"]) == ("DPM++ 2M SDE", "Karras")
    meta, fields = made_and_replayed(capsys, tmp_path / "b", "a cat", "--model", tiny_sd1, "--scheduler", "euler",
                                     "--s-noise", "0.5")  # fmt: skip
    assert meta["s_noise"] == 0.5 and fields["Sigma noise"] == "0.5"


def test_the_a1111_line_alone_replays_the_same_sampler(capsys, tmp_path, tiny_sd1):
    """An image whose only parameters are the A1111 line (as A1111 or civitai pass it on) replays to
    the same pixels: "Sampler: DPM++ 2M SDE, Schedule type: Karras" reads back to that choice."""
    (made,) = generate(capsys, "a cat", "--model", tiny_sd1, "--scheduler", "dpmpp_2m_sde", "--schedule-type",
                       "karras", "--steps", 2, "--out", tmp_path / "a")  # fmt: skip
    with Image.open(made) as im:
        line = im.text["parameters"]
        bare = tmp_path / "bare.png"
        info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
        info.add_text("parameters", line)
        im.save(bare, pnginfo=info)
    (again,) = generate(capsys, "--from", bare, "--model", tiny_sd1, "--out", tmp_path / "b")
    assert np.array_equal(pixels(again), pixels(made))


def test_bad_sampler_names_exit_2_naming_the_choices(capsys, tiny_sd1):
    line = fails(capsys, "x", "--model", tiny_sd1, "--scheduler", "Warp Drive")
    assert "unknown scheduler 'Warp Drive'" in line and "dpm++2m_sde (DPM++ 2M SDE)" in line
    line = fails(capsys, "x", "--model", tiny_sd1, "--scheduler", "euler", "--schedule-type", "zigzag")
    assert "unknown schedule type 'zigzag'" in line and "sgm_uniform (SGM Uniform)" in line
    line = fails(capsys, "x", "--model", tiny_sd1, "--scheduler", "euler_a", "--eta", "0.5")
    assert "eta applies to the samplers DDIM, TCD" in line
