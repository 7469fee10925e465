"""The cascade: a diffusion upscaler (StableDiffusionUpscalePipeline format) against diffusers on a
tiny random model of that architecture; tiles without seams (against the untiled image); hires fix; the command line."""

import numpy as np
import pytest
import torch
from helpers import max_pixel_diff, noise_image
from PIL import Image

from latentdiff import Pipeline
from latentdiff.cli.main import main
from latentdiff.sampling.loop import make_scheduler


@pytest.fixture(scope="module")
def tiny_upscaler(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_upscaler

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
    mine = upscaler.upscale(
        low, prompt="a red apple", steps=4, guidance=guidance, noise_level=noise_level, seed=5, scheduler=scheduler
    )
    theirs = ref(
        "a red apple",
        image=low,
        num_inference_steps=4,
        guidance_scale=guidance,
        noise_level=noise_level,
        generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    assert mine.size == theirs.size == (64, 64)
    assert np.asarray(mine).std() > 5 and max_pixel_diff([mine], [theirs]) <= 1
    info = mine.info["latentdiff"]
    assert info["noise_level"] == noise_level and len(info["upscale_of_hash"]) == 16


def border_ratio(err: np.ndarray, lines: list[int], band: int) -> float:
    """How much larger the error is on tile borders than beside them: for each line (a column and
    a row index where a tile window starts or ends), the mean of `err` (H, W) over the `band`-wide
    strips there, over its mean on the strips 2 to 4 bands to either side; the largest ratio.
    About 1 where tiling leaves no seam (the error varies smoothly), well above where it does."""

    def strip(p):
        return np.concatenate([err[:, p : p + band].ravel(), err[p : p + band, :].ravel()]).mean()

    ratios = []
    for p in lines:
        beside = [strip(p + k * band) for k in (-4, -3, -2, 2, 3, 4) if 0 <= p + k * band <= len(err) - band]
        ratios.append(strip(p) / np.mean(beside))
    return max(ratios)


def window_borders(size: int, tile: int, factor: int) -> list[int]:
    """Output-pixel lines where a latent window starts (its first column) or ends (its last)."""
    from latentdiff.sampling.wrappers import _starts

    starts = _starts(size, tile)
    return sorted({factor * s for s in starts[1:]} | {factor * (s + tile - 1) for s in starts[:-1]})


def test_tiles_match_the_untiled_image_without_seams(upscaler, monkeypatch):
    """Tiled and untiled upscales of one image and seed differ a little everywhere (each window's
    UNet and VAE see less context), but no more on the window borders than beside them. Both
    metrics are shown to catch naive tiling: the same windows averaged with flat weights."""
    import latentdiff.sampling.wrappers

    low = noise_image((56, 56), seed=7)
    whole = np.asarray(upscaler.upscale(low, steps=3, guidance=1.0, seed=1), dtype=float)

    def tiling_error(tile):
        tiled = upscaler.upscale(low, steps=3, guidance=1.0, seed=1, tile=tile)
        assert tiled.size == (224, 224)
        return np.abs(np.asarray(tiled, dtype=float) - whole).mean(axis=2)  # (H, W), 0..255

    borders = {128: window_borders(56, 32, 4), 100: window_borders(56, 24, 4)}  # tile 100 px: 24 latents (6 * 4)
    assert borders[128] == [96, 124] and len(borders[100]) == 4
    for tile, lines in borders.items():
        err = tiling_error(tile)
        assert err.mean() > 0, "the tiled path must have run"
        assert err.max() < 35 and border_ratio(err, lines, 4) < 1.5, f"tile {tile}: a border shows"
    monkeypatch.setattr(
        latentdiff.sampling.wrappers, "_ramp", lambda h, w, device: torch.ones((1, 1, h, w), device=device)
    )
    naive = tiling_error(128)
    assert naive.max() > 35 and border_ratio(naive, borders[128], 4) > 2, "the metric must see a seam"


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
    by_hand = pipe_sd1(
        "a red apple", image=plain.resize((96, 96), Image.Resampling.LANCZOS), strength=0.6, **{**args, "steps": 4}
    )[0]
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
    assert (
        main(
            [
                "upscale",
                str(low),
                "--model",
                str(tiny_upscaler),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "u"),
                "--quiet",
                "--device",
                "cpu",
                "--tile",
                "64",
            ]
        )
        == 0
    )
    written = capsys.readouterr().out.strip()
    assert Image.open(written).size == (64, 64)
    assert (
        main(
            [
                "generate",
                "a red apple",
                "--model",
                str(tiny_sd1),
                "--steps",
                "2",
                "--upscaler",
                str(tiny_upscaler),
                "--out",
                str(tmp_path / "g"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip()
    assert Image.open(out).size == (256, 256)


def test_cli_upscaler_as_generate_model_is_refused(tiny_upscaler, tmp_path, capsys):
    code = main(
        ["generate", "x", "--model", str(tiny_upscaler), "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"]
    )
    out, err = capsys.readouterr()
    assert code == 2 and "upscaler" in err and len(err.strip().splitlines()) == 1 and out == ""
    assert not (tmp_path / "o").exists()
