"""img2img against diffusers' StableDiffusionImg2ImgPipeline, and `generate --init-image` as users run it."""

import json

import numpy as np
import pytest
import torch
from helpers import max_pixel_diff, noise_image, paired
from PIL import Image

from latentdiff import UsageError
from latentdiff.cli.main import main
from latentdiff.sampling.loop import make_scheduler


@pytest.fixture(scope="module")
def pipes(tiny_sd1, tiny_sd2):
    return paired({"sd1": tiny_sd1, "sd2": tiny_sd2}, "StableDiffusionImg2ImgPipeline")


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
@pytest.mark.parametrize("scheduler", ["ddim", "euler_a", "dpm++2m"])
def test_img2img_matches_diffusers(pipes, kind, scheduler):
    ours, ref = pipes[kind]
    init = noise_image()
    mine = ours(
        "a red apple", image=init, strength=0.6, steps=5, guidance=6.0, seed=3, num_images=2, scheduler=scheduler
    )
    ref.scheduler = make_scheduler(ours.components.scheduler_config, scheduler)
    # diffusers draws the VAE posterior sample and the noise from the generators: one per image, seed + k.
    gens = [torch.Generator("cpu").manual_seed(3 + k) for k in range(2)]
    theirs = ref(
        "a red apple",
        image=init,
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=6.0,
        num_images_per_prompt=2,
        generator=gens,
    ).images
    assert np.asarray(mine[0]).std() > 5
    assert max_pixel_diff(mine, theirs) <= 1
    text_only = ours("a red apple", steps=5, guidance=6.0, seed=3, scheduler=scheduler)
    assert max_pixel_diff(mine[:1], text_only) > 10, "the init image must matter"


def test_strength_changes_how_close_the_result_stays(pipes):
    ours, _ = pipes["sd1"]
    init = noise_image()
    far = [ours("a red apple", image=init, strength=s, steps=10, guidance=3.0, seed=1)[0] for s in (0.2, 1.0)]
    dist = [np.abs(np.asarray(im, dtype=int) - np.asarray(init, dtype=int)).mean() for im in far]
    assert dist[0] < dist[1]


def test_metadata_records_the_start(pipes, tmp_path):
    ours, _ = pipes["sd1"]
    path = tmp_path / "in.png"
    noise_image().save(path)
    image = ours("a red apple", image=str(path), strength=0.5, steps=2, seed=0)[0]
    info = image.info["latentdiff"]
    assert info["init_image"] == str(path.resolve()) and len(info["init_image_hash"]) == 16
    assert (info["strength"], info["resize"], info["width"], info["height"]) == (0.5, "crop", 64, 64)
    # the same picture as a PIL image has the same (pixel) hash
    again = ours("a red apple", image=noise_image(), strength=0.5, steps=2, seed=0)[0]
    assert again.info["latentdiff"]["init_image_hash"] == info["init_image_hash"]
    assert max_pixel_diff([image], [again]) == 0


@pytest.mark.parametrize("mode,expect", [("crop", (64, 32)), ("fit", (64, 32)), ("stretch", (64, 32))])
def test_any_size_is_brought_to_the_asked_size(pipes, mode, expect):
    ours, _ = pipes["sd1"]
    image = ours("a red apple", image=noise_image((100, 37)), strength=0.5, steps=2, width=64, height=32, resize=mode)[
        0
    ]
    assert image.size == expect and image.info["latentdiff"]["resize"] == mode


def test_without_a_size_the_picture_is_trimmed_to_the_factor(pipes):
    ours, _ = pipes["sd1"]
    f = ours.scale_factor
    image = ours("a red apple", image=noise_image((70, 45)), strength=0.5, steps=2)[0]
    assert image.size == (70 - 70 % f, 45 - 45 % f) != (70, 45)


def test_exif_rotation_and_16_bit_are_read_like_finetune(pipes, tmp_path):
    ours, _ = pipes["sd1"]
    grey = Image.fromarray((np.arange(64 * 32).reshape(32, 64) * 30).astype(np.uint16))
    grey.save(tmp_path / "deep.png")
    wide = noise_image((64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the file is stored sideways
    wide.save(tmp_path / "turned.jpg", exif=exif)
    assert ours("x", image=str(tmp_path / "deep.png"), strength=0.3, steps=1)[0].size == (64, 32)
    assert ours("x", image=str(tmp_path / "turned.jpg"), strength=0.3, steps=1)[0].size == (32, 64)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_strength_outside_range_is_refused(pipes, bad):
    ours, _ = pipes["sd1"]
    with pytest.raises(UsageError, match="strength"):
        ours("x", image=noise_image(), strength=bad, steps=1)


# ---- SDXL: the same start step under SDXL's conditioning ---------------------------------------


@pytest.fixture(scope="module")
def sdxl_pipes(tiny_sdxl, tiny_refiner):
    """kind -> (ours, diffusers' StableDiffusionXLImg2ImgPipeline): the base (size ids) and the
    refiner (requires_aesthetics_score: aesthetic-score ids) on the same weights."""
    return paired(
        {"base": tiny_sdxl, "refiner": tiny_refiner}, "StableDiffusionXLImg2ImgPipeline", add_watermarker=False
    )


@pytest.mark.parametrize(
    "kind,scheduler,negative",
    [
        ("base", "euler_a", ""),
        ("base", "ddim", "blue sky"),
        ("base", "dpm++2m", ""),
        ("refiner", "euler_a", "blue sky"),
    ],
)
def test_sdxl_img2img_matches_diffusers(sdxl_pipes, kind, scheduler, negative):
    ours, ref = sdxl_pipes[kind]
    init = noise_image((48, 40), seed=6)  # not square: the size ids must come from the init image's size
    mine = ours(
        "a red apple",
        negative_prompt=negative,
        image=init,
        strength=0.7,
        steps=4,
        guidance=5.0,
        seed=3,
        num_images=2,
        scheduler=scheduler,
    )
    ref.scheduler = make_scheduler(ours.components.scheduler_config, scheduler)
    gens = [torch.Generator("cpu").manual_seed(3 + k) for k in range(2)]
    theirs = ref(
        "a red apple",
        negative_prompt=negative or None,
        image=init,
        strength=0.7,
        num_inference_steps=4,
        guidance_scale=5.0,
        num_images_per_prompt=2,
        generator=gens,
    ).images
    assert mine[0].size == theirs[0].size == (48, 40) and np.asarray(mine[0]).std() > 5
    assert max_pixel_diff(mine, theirs) <= 1
    text_only = ours(
        "a red apple", negative_prompt=negative, steps=4, guidance=5.0, seed=3, width=48, height=40, scheduler=scheduler
    )
    assert max_pixel_diff(mine[:1], text_only) > 10, "the init image must matter"


# ---- the command line ----------------------------------------------------------------------


def run(capsys, *argv):
    code = main(["generate", *map(str, argv), "--quiet", "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_img2img_and_from_reproduce(tiny_sd1, tmp_path, capsys):
    init = tmp_path / "photo.png"
    noise_image((80, 72), seed=4).save(init)
    code, out, err = run(
        capsys,
        "a red apple",
        "--model",
        tiny_sd1,
        "--out",
        tmp_path / "o",
        "--steps",
        3,
        "--init-image",
        init,
        "--strength",
        0.7,
        "--scheduler",
        "euler_a",
        "--seed",
        5,
    )
    assert code == 0, err
    first = out.strip()
    with Image.open(first) as im:
        meta = json.loads(im.text["latentdiff"])
        pixels = np.asarray(im.convert("RGB"))
    assert meta["strength"] == 0.7 and meta["init_image"] == str(init.resolve()) and pixels.shape == (72, 80, 3)
    code, out, err = run(capsys, "--from", first, "--out", tmp_path / "again")
    assert code == 0, err
    with Image.open(out.strip()) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels)
    # the init file changed since: --from refuses rather than make a different picture
    noise_image((80, 72), seed=5).save(init)
    code, out, err = run(capsys, "--from", first, "--out", tmp_path / "third")
    assert code == 2 and "not the picture recorded" in err and out == ""


@pytest.mark.parametrize("argv,message", [(["--strength", "0"], "strength"), (["--strength", "1.2"], "strength")])
def test_cli_bad_strength(tiny_sd1, tmp_path, capsys, argv, message):
    init = tmp_path / "in.png"
    noise_image().save(init)
    code, out, err = run(capsys, "x", "--model", tiny_sd1, "--out", tmp_path / "o", "--init-image", init, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_init_image_that_is_not_an_image(tiny_sd1, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    code, out, err = run(capsys, "x", "--model", tiny_sd1, "--out", tmp_path / "o", "--init-image", bad)
    assert code == 2 and "init image" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
