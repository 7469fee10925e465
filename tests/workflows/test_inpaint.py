"""Inpainting and outpainting: diffusers' StableDiffusionInpaintPipeline on the same weights (an
inpainting UNet and an ordinary one), and the promise that pixels outside the mask stay the input's."""

import numpy as np
import pytest
import torch
from helpers import max_pixel_diff, noise_image, paired
from PIL import Image

from latentdiff import UsageError
from latentdiff.cli.main import main
from latentdiff.sampling.loop import make_scheduler
from latentdiff.workflows.source import crop_box, soft_mask


def box_mask(size=(64, 64), box=(16, 8, 48, 40)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.fixture(scope="module")
def tiny_inpaint(tmp_path_factory):
    from latentdiff.models.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "inpaint", "sd1-inpaint")


@pytest.fixture(scope="module")
def pipes(tiny_sd1, tiny_inpaint):
    return paired({"ordinary": tiny_sd1, "inpaint-unet": tiny_inpaint}, "StableDiffusionInpaintPipeline")


@pytest.mark.parametrize("kind", ["inpaint-unet", "ordinary"])
@pytest.mark.parametrize("scheduler,strength", [("ddim", 1.0), ("euler_a", 0.7)])
def test_inpaint_matches_diffusers(pipes, kind, scheduler, strength):
    ours, ref = pipes[kind]
    init, mask = noise_image(), box_mask()
    mine = ours(
        "a red apple",
        image=init,
        mask=mask,
        strength=strength,
        mask_blur=0,
        steps=4,
        guidance=6.0,
        seed=3,
        scheduler=scheduler,
    )
    ref.scheduler = make_scheduler(ours.components.scheduler_config, scheduler)
    theirs = ref(
        "a red apple",
        image=init,
        mask_image=mask,
        strength=strength,
        num_inference_steps=4,
        guidance_scale=6.0,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    # diffusers returns the decoded image as is; ours pastes it over the input outside the mask
    theirs = Image.composite(theirs, init, soft_mask(mask, 0))
    assert max_pixel_diff(mine, [theirs]) <= 1
    inside = np.asarray(mine[0])[8:40, 16:48].astype(int)
    assert np.abs(inside - np.asarray(init)[8:40, 16:48]).mean() > 10, "the masked area must be repainted"


@pytest.mark.parametrize("kind", ["inpaint-unet", "ordinary"])
@pytest.mark.parametrize("blur,area", [(0, "full"), (4, "full"), (3, "masked")])
def test_pixels_outside_the_blurred_mask_are_the_input(pipes, kind, blur, area):
    ours, _ = pipes[kind]
    init, mask = noise_image(seed=2), box_mask(box=(20, 24, 40, 44))
    out = np.asarray(
        ours("a red apple", image=init, mask=mask, mask_blur=blur, inpaint_area=area, padding=4, steps=3, seed=1)[0]
    )
    alpha = np.asarray(soft_mask(mask, blur))
    outside = alpha == 0
    assert outside.sum() > 0.5 * alpha.size
    assert np.array_equal(out[outside], np.asarray(init)[outside])
    assert (np.abs(out.astype(int) - np.asarray(init, dtype=int))[alpha >= 250]).mean() > 10
    if blur:
        assert ((alpha > 0) & (alpha < 255)).any(), "a blurred mask has a soft edge"


@pytest.fixture(scope="module")
def tiny_sdxl_inpaint(tiny_sdxl, tmp_path_factory):
    """The tiny SDXL base with a 9-channel inpainting UNet (latents, mask, masked-image latents)."""
    import shutil

    from diffusers import UNet2DConditionModel

    from latentdiff.models.testing import tiny_sdxl_unet

    out = tmp_path_factory.mktemp("models") / "sdxl-inpaint"
    shutil.copytree(tiny_sdxl, out)
    shutil.rmtree(out / "unet")
    torch.manual_seed(7)
    UNet2DConditionModel(**{**tiny_sdxl_unet(), "in_channels": 9}).save_pretrained(
        out / "unet", safe_serialization=True
    )
    return out


@pytest.fixture(scope="module")
def sdxl_pipes(tiny_sdxl, tiny_sdxl_inpaint):
    return paired(
        {"ordinary": tiny_sdxl, "inpaint-unet": tiny_sdxl_inpaint},
        "StableDiffusionXLInpaintPipeline",
        add_watermarker=False,
    )


@pytest.mark.parametrize("kind", ["ordinary", "inpaint-unet"])
@pytest.mark.parametrize("scheduler,strength", [("euler_a", 0.7), ("ddim", 1.0)])
def test_sdxl_inpaint_matches_diffusers(sdxl_pipes, kind, scheduler, strength):
    """SDXL inpainting under SDXL's conditioning: the blend path with an ordinary 4-channel UNet, the
    mask and masked-image latents as extra channels with a 9-channel inpainting UNet."""
    ours, ref = sdxl_pipes[kind]
    ref.scheduler = make_scheduler(ours.components.scheduler_config, scheduler)
    init, mask = noise_image((48, 40), seed=1), box_mask((48, 40), (8, 8, 32, 32))
    mine = ours(
        "a red apple",
        image=init,
        mask=mask,
        strength=strength,
        mask_blur=0,
        steps=4,
        guidance=5.0,
        seed=3,
        scheduler=scheduler,
    )[0]
    theirs = ref(
        "a red apple",
        image=init,
        mask_image=mask,
        strength=strength,
        num_inference_steps=4,
        guidance_scale=5.0,
        width=48,
        height=40,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert max_pixel_diff([mine], [Image.composite(theirs, init, soft_mask(mask, 0))]) <= 1
    out, src, outside = np.asarray(mine).astype(int), np.asarray(init).astype(int), np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside])
    assert np.abs(out - src)[~outside].mean() > 10, "the masked area must be repainted"


def test_masked_area_mode_works_at_full_size(pipes):
    ours, _ = pipes["ordinary"]
    init, mask = noise_image(seed=2), box_mask(box=(28, 28, 36, 36))
    full = ours("x", image=init, mask=mask, mask_blur=0, steps=3, seed=1)[0]
    crop = ours("x", image=init, mask=mask, mask_blur=0, inpaint_area="masked", padding=4, steps=3, seed=1)[0]
    assert crop.info["latentdiff"]["inpaint_area"] == "masked" and crop.info["latentdiff"]["padding"] == 4
    assert max_pixel_diff([full], [crop]) > 10


@pytest.mark.parametrize("blur", [2, 6])
def test_masked_area_crop_holds_the_whole_blurred_mask_at_padding_0(pipes, blur):
    """A1111's API default padding is 0: the crop box must still hold every pixel the blurred
    mask touches, else the pasted crop ends in a square seam where the alpha is still > 0."""
    ours, _ = pipes["ordinary"]
    init, mask = noise_image(seed=2), box_mask(box=(24, 20, 40, 36))
    alpha = np.asarray(soft_mask(mask, blur))
    x1, y1, x2, y2 = crop_box(mask, init.size, 0, blur)
    in_box = np.zeros(alpha.shape, bool)
    in_box[y1:y2, x1:x2] = True
    assert (alpha[~in_box] == 0).all() and ((alpha > 0) & (alpha < 255)).any()
    assert (x2 - x1, y2 - y1) != (16, 16), "the box is not the unblurred mask's"
    out = np.asarray(
        ours("x", image=init, mask=mask, mask_blur=blur, inpaint_area="masked", padding=0, steps=3, seed=1)[0]
    )
    assert np.array_equal(out[~in_box], np.asarray(init)[~in_box])
    assert np.abs(out.astype(int) - np.asarray(init, dtype=int))[alpha > 128].mean() > 10


def test_outpaint_grows_the_canvas_and_keeps_the_original(pipes):
    ours, _ = pipes["ordinary"]
    init = noise_image((48, 40), seed=3)
    out = ours("x", image=init, outpaint=(8, 8, 0, 12), mask_blur=0, steps=3, seed=1)[0]
    f = ours.scale_factor
    assert out.size == (64 + (-64 % f), 52 + (-52 % f)) and out.info["latentdiff"]["outpaint"] == [8, 8, 0, 12]
    assert np.array_equal(np.asarray(out)[0:40, 8:56], np.asarray(init))
    assert np.asarray(out)[40:, :].std() > 5  # the new area is painted, not left as repeated edge pixels


def test_mask_of_another_size_is_resized_and_said_once(pipes, capsys):
    ours, _ = pipes["ordinary"]
    ours("x", image=noise_image(), mask=box_mask((32, 32), (8, 8, 24, 24)), steps=1, num_images=2)
    err = capsys.readouterr().err
    assert err.count("the mask was resized") == 1


def test_all_black_mask_is_refused(pipes):
    ours, _ = pipes["ordinary"]
    with pytest.raises(UsageError, match="all black"):
        ours("x", image=noise_image(), mask=Image.new("L", (64, 64), 0), steps=1)


def test_cli_inpaint_from_reproduces_and_bad_mask_exits_2(tiny_sd1, tmp_path, capsys):
    init, mask = tmp_path / "in.png", tmp_path / "mask.png"
    noise_image().save(init)
    box_mask().convert("RGBA").save(mask)  # any mode
    argv = [
        "generate",
        "a red apple",
        "--model",
        str(tiny_sd1),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "3",
        "--init-image",
        str(init),
        "--mask",
        str(mask),
        "--mask-blur",
        "2",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out.strip()
    assert main(["generate", "--from", first, "--out", str(tmp_path / "again"), "--quiet", "--device", "cpu"]) == 0
    again = capsys.readouterr().out.strip()
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    Image.new("L", (64, 64), 0).save(mask)
    code = main(argv[:5] + [str(tmp_path / "bad")] + argv[6:])
    err = capsys.readouterr().err
    assert code == 2 and "all black" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
