"""The cascade: a diffusion upscaler (StableDiffusionUpscalePipeline format) against diffusers on a
tiny random model of that architecture; tiles without seams; hires fix; the command line."""

import numpy as np
import pytest
import torch
from PIL import Image

from latentdiff import Pipeline
from latentdiff.cli import main
from latentdiff.sampling import make_scheduler

from test_img2img import noise_image
from test_parity import max_pixel_diff


@pytest.fixture(scope="module")
def tiny_upscaler(tmp_path_factory):
    from latentdiff.testing import make_tiny_upscaler

    return make_tiny_upscaler(tmp_path_factory.mktemp("models") / "x4")


@pytest.fixture(scope="module")
def upscaler(tiny_upscaler):
    p = Pipeline.from_pretrained(tiny_upscaler, device="cpu", dtype="fp32")
    p.progress = False
    return p


@pytest.mark.parametrize("scheduler,guidance,noise_level", [(None, 6.0, 20), ("euler_a", 1.0, 60)])
def test_upscale_matches_diffusers(upscaler, tiny_upscaler, scheduler, guidance, noise_level):
    from diffusers import StableDiffusionUpscalePipeline

    ref = StableDiffusionUpscalePipeline.from_pretrained(tiny_upscaler)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(upscaler.components.scheduler_config, scheduler)
    low = noise_image((16, 16), seed=7)
    mine = upscaler.upscale(low, prompt="a red apple", steps=4, guidance=guidance, noise_level=noise_level, seed=5,
                            scheduler=scheduler)
    theirs = ref("a red apple", image=low, num_inference_steps=4, guidance_scale=guidance, noise_level=noise_level,
                 generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert mine.size == theirs.size == (64, 64)
    assert np.asarray(mine).std() > 5 and max_pixel_diff([mine], [theirs]) <= 1
    info = mine.info["latentdiff"]
    assert info["noise_level"] == noise_level and len(info["upscale_of_hash"]) == 16


def seam_ratio(image: Image.Image, borders: list[int]) -> float:
    """The largest jump across the given columns and rows relative to the 99th percentile of the
    jumps between all other neighbouring columns and rows."""
    a = np.asarray(image, dtype=float)
    cols = np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))  # jump between column j and j + 1
    rows = np.abs(np.diff(a, axis=0)).mean(axis=(1, 2))
    at = [b - 1 for b in borders if 0 < b < len(cols)]
    others = np.delete(np.concatenate([cols, rows]), at + [len(cols) + b for b in at])
    return max(cols[at].max(), rows[at].max()) / np.percentile(others, 99)


def tile_borders(size: int, tile: int, factor: int) -> list[int]:
    from latentdiff.upscale import _starts

    latent_tile = tile // factor
    starts = _starts(size, latent_tile)
    return sorted({factor * s for s in starts[1:]} | {factor * (s + latent_tile) for s in starts[:-1]})


def test_tiles_leave_no_seam_on_a_flat_picture(upscaler):
    """Weak with a random model (its output is noise texture, which hides small seams; see the
    README's note), but a border where tiles are misaligned or not blended shows as a jump."""
    flat = Image.new("RGB", (48, 48), (200, 120, 40))
    whole = upscaler.upscale(flat, steps=3, guidance=1.0, seed=1)
    tiled = upscaler.upscale(flat, steps=3, guidance=1.0, seed=1, tile=96)
    assert tiled.size == whole.size == (192, 192)
    borders = tile_borders(48, 96, 4)
    assert len(borders) == 3 and seam_ratio(tiled, borders) < 1.0, "a tile border shows as a jump"
    assert max_pixel_diff([tiled], [whole]) > 0, "the tiled path must have run"


def test_api_upscale_from_a_text_pipeline(pipe_sd1, tiny_upscaler):
    big = pipe_sd1.upscale(noise_image((16, 16)), steps=2, upscaler=str(tiny_upscaler))
    assert big.size == (64, 64)


# ---- hires fix -----------------------------------------------------------------------------

def test_hires_first_pass_is_the_plain_image(pipe_sd1):
    """With the lanczos upscaler, hires = img2img of the plain image upscaled: so its first pass is
    exactly the image made without --hires."""
    args = dict(steps=3, guidance=4.0, seed=2, scheduler="euler_a")
    hires = pipe_sd1("a red apple", hires=1.5, hires_upscaler="lanczos", hires_strength=0.6, hires_steps=4, **args)[0]
    plain = pipe_sd1("a red apple", **args)[0]
    by_hand = pipe_sd1("a red apple", image=plain.resize((96, 96), Image.Resampling.LANCZOS), strength=0.6,
                       **{**args, "steps": 4})[0]
    assert hires.size == (96, 96) and max_pixel_diff([hires], [by_hand]) == 0
    meta = hires.info["latentdiff"]
    assert (meta["hires"], meta["hires_size"], meta["width"]) == (1.5, [96, 96], 64)


def test_hires_in_latent_space_and_with_an_upscaler_model(pipe_sd1, tiny_upscaler):
    latent = pipe_sd1("a red apple", steps=2, seed=0, hires=2)[0]
    assert latent.size == (128, 128) and np.asarray(latent).std() > 5
    model = pipe_sd1("a red apple", steps=2, seed=0, hires=1.5, hires_upscaler=str(tiny_upscaler))[0]
    assert model.size == (96, 96)


# ---- the command line ----------------------------------------------------------------------

def test_cli_upscale_and_cascade(tiny_sd1, tiny_upscaler, tmp_path, capsys):
    low = tmp_path / "low.png"
    noise_image((16, 16)).save(low)
    assert main(["upscale", str(low), "--model", str(tiny_upscaler), "--steps", "2", "--out", str(tmp_path / "u"),
                 "--quiet", "--device", "cpu", "--tile", "64"]) == 0
    written = capsys.readouterr().out.strip()
    assert Image.open(written).size == (64, 64)
    assert main(["generate", "a red apple", "--model", str(tiny_sd1), "--steps", "2", "--upscaler", str(tiny_upscaler),
                 "--out", str(tmp_path / "g"), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip()
    assert Image.open(out).size == (256, 256)


def test_cli_upscaler_as_generate_model_is_refused(tiny_upscaler, tmp_path, capsys):
    code = main(["generate", "x", "--model", str(tiny_upscaler), "--out", str(tmp_path / "o"), "--quiet",
                 "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and "upscaler" in err and len(err.strip().splitlines()) == 1 and out == ""
    assert not (tmp_path / "o").exists()
