"""ControlNet against diffusers' own ControlNet pipelines on the same tiny random weights: one
unit, several units, start/end fractions, guess mode ("ControlNet is more important"); weight 0
gives the base model's pixels exactly."""

import pytest
import torch
from helpers import max_pixel_diff, noise_image, tiny_controlnet

from latentdiff import Control, Pipeline
from latentdiff.errors import UsageError
from latentdiff.sampling.loop import make_scheduler


@pytest.fixture(scope="module")
def setup(tiny_sd1, tmp_path_factory):
    from diffusers import StableDiffusionControlNetPipeline

    ours = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    ours.progress = False
    nets = [tiny_controlnet(ours.components.unet, ours.scale_factor, s) for s in (1, 2)]
    folder = tmp_path_factory.mktemp("cn") / "cn0"
    nets[0].save_pretrained(folder)
    ref = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_sd1, controlnet=nets[0], safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    return ours, ref, nets, folder


def reference(ref, ours, nets, images, scales, starts, ends, guess=False, guidance=6.0, n=1):
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    ref.controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    one = len(nets) == 1
    return ref(
        "a red apple",
        image=images[0] if one else images,
        num_inference_steps=5,
        guidance_scale=guidance,
        num_images_per_prompt=n,
        generator=[torch.Generator().manual_seed(7 + k) for k in range(n)],
        controlnet_conditioning_scale=scales[0] if one else scales,
        control_guidance_start=starts[0] if one else starts,
        control_guidance_end=ends[0] if one else ends,
        guess_mode=guess,
        height=64,
        width=64,
    ).images


def ours_with(ours, units, mode="balanced", guidance=6.0, n=1):
    return ours(
        "a red apple",
        steps=5,
        guidance=guidance,
        seed=7,
        num_images=n,
        scheduler="euler",
        controls=units,
        control_mode=mode,
    )


MAPS = [noise_image((64, 64), seed=3), noise_image((48, 80), seed=4)]


@pytest.mark.parametrize("guidance,n", [(6.0, 1), (1.0, 2)])
def test_one_unit_matches_diffusers(setup, guidance, n):
    ours, ref, nets, folder = setup
    mine = ours_with(ours, [Control(MAPS[0], folder, 0.8)], guidance=guidance, n=n)
    theirs = reference(ref, ours, nets[:1], MAPS[:1], [0.8], [0.0], [1.0], guidance=guidance, n=n)
    base = ours_with(ours, None, guidance=guidance, n=n)
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, base) > 8, "the control must change the picture"


def test_two_units_with_step_ranges_match_diffusers(setup):
    ours, ref, nets, folder = setup
    units = [Control(MAPS[0], folder, 1.0, 0.0, 0.6), Control(MAPS[1], nets[1], 0.5, 0.2, 1.0, resize="stretch")]
    mine = ours_with(ours, units)
    theirs = reference(ref, ours, nets, MAPS, [1.0, 0.5], [0.0, 0.2], [0.6, 1.0])
    assert max_pixel_diff(mine, theirs) <= 1


def test_guess_mode_matches_diffusers(setup):
    ours, ref, nets, folder = setup
    mine = ours_with(ours, [Control(MAPS[0], folder, 1.0)], mode="guess")
    theirs = reference(ref, ours, nets[:1], MAPS[:1], [1.0], [0.0], [1.0], guess=True)
    balanced = ours_with(ours, [Control(MAPS[0], folder, 1.0)])
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, balanced) > 1


def test_weight_zero_gives_the_base_pixels(setup):
    ours, _, _, folder = setup
    base = ours_with(ours, None)
    assert max_pixel_diff(ours_with(ours, [Control(MAPS[0], folder, 0.0)]), base) == 0
    assert max_pixel_diff(ours_with(ours, [Control(MAPS[0], folder, 1.0, 0.0, 0.1)]), base) == 0


@pytest.mark.parametrize(
    "unit,match",
    [
        (Control(MAPS[0], "nowhere", 1.0), "not a ControlNet or T2I-Adapter folder"),
        (Control(MAPS[0], None, 1.0), "must be a ControlNet or T2I-Adapter folder"),
        (Control(MAPS[0], "x", True), "weight must be a number from 0 to 2.0"),
        (Control(MAPS[0], "x", 1.0, 0.5, 0.5), "start .0.5. must be below end"),
        (Control("missing.png", "x", 1.0), None),
    ],
)
def test_bad_units_are_one_usage_error(setup, unit, match):
    ours = setup[0]
    with pytest.raises(UsageError, match=match):
        ours_with(ours, [unit])


def test_sdxl_unit_matches_diffusers(tiny_sdxl):
    from diffusers import StableDiffusionXLControlNetPipeline

    ours = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    ours.progress = False
    net = tiny_controlnet(ours.components.unet, ours.scale_factor, 5)
    ref = StableDiffusionXLControlNetPipeline.from_pretrained(tiny_sdxl, controlnet=net, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    size = ours.native_size
    for guess in (False, True):
        mine = ours(
            "a red apple",
            steps=4,
            guidance=5.0,
            seed=3,
            scheduler="euler",
            controls=[Control(MAPS[1], net, 0.7, 0.0, 0.8, resize="stretch")],
            control_mode="guess" if guess else "balanced",
        )
        theirs = ref(
            "a red apple",
            image=MAPS[1],
            num_inference_steps=4,
            guidance_scale=5.0,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(3),
            controlnet_conditioning_scale=0.7,
            control_guidance_end=0.8,
            guess_mode=guess,
        ).images
        assert max_pixel_diff(mine, theirs) <= 1, guess


def test_img2img_unit_matches_diffusers(setup, tiny_sd1):
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    ours, _, nets, folder = setup
    ref = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
        tiny_sd1, controlnet=nets[0], safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    init = noise_image((64, 64), seed=9)
    mine = ours(
        "a red apple",
        image=init,
        strength=0.6,
        steps=5,
        guidance=6.0,
        seed=7,
        scheduler="euler",
        controls=[Control(MAPS[0], folder, 0.9, 0.0, 0.7)],
    )
    theirs = ref(
        "a red apple",
        image=init,
        control_image=MAPS[0],
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=6.0,
        generator=[torch.Generator().manual_seed(7)],
        controlnet_conditioning_scale=0.9,
        control_guidance_end=0.7,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1


def test_inpaint_unit_matches_diffusers(setup, tiny_sd1):
    from diffusers import StableDiffusionControlNetInpaintPipeline
    from PIL import Image

    ours, _, nets, folder = setup
    ref = StableDiffusionControlNetInpaintPipeline.from_pretrained(
        tiny_sd1, controlnet=nets[0], safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "ddim")
    init, mask = noise_image((64, 64), seed=9), Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 8, 48, 40))
    mine = ours(
        "a red apple",
        image=init,
        mask=mask,
        mask_blur=0,
        strength=1.0,
        steps=4,
        guidance=6.0,
        seed=3,
        scheduler="ddim",
        controls=[Control(MAPS[0], folder, 1.0)],
    )
    theirs = ref(
        "a red apple",
        image=init,
        mask_image=mask,
        control_image=MAPS[0],
        strength=1.0,
        num_inference_steps=4,
        guidance_scale=6.0,
        generator=torch.Generator().manual_seed(3),
        controlnet_conditioning_scale=1.0,  # this pipeline's default is 0.5
    ).images[0]
    theirs = Image.composite(theirs, init, mask)  # ours pastes the result over the input outside the mask
    assert max_pixel_diff(mine, [theirs]) <= 1


def test_hires_pass_controls_both_passes(setup):
    ours, _, _, folder = setup
    unit = [Control(MAPS[0], folder, 1.0)]
    kw = dict(steps=3, guidance=5.0, seed=1, hires=1.5, hires_steps=2, hires_strength=0.5)
    with_control, base = ours("a red apple", controls=unit, **kw)[0], ours("a red apple", **kw)[0]
    assert with_control.size == (96, 96)
    assert max_pixel_diff([with_control], [base]) > 8


def tiny_adapter(channels, factor: int, seed: int, kind: str = "full_adapter", in_channels: int = 3):
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    return T2IAdapter(in_channels, list(channels), 1, factor, kind).eval()


@pytest.mark.parametrize("guidance,n", [(6.0, 1), (1.0, 2)])
def test_t2i_adapter_matches_diffusers(setup, tiny_sd1, guidance, n):
    from diffusers import StableDiffusionAdapterPipeline

    ours = setup[0]
    adapter = tiny_adapter(ours.components.unet.config.block_out_channels, ours.scale_factor, 4)
    ref = StableDiffusionAdapterPipeline.from_pretrained(
        tiny_sd1, adapter=adapter, safety_checker=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    mine = ours_with(ours, [Control(MAPS[0], adapter, 0.8)], guidance=guidance, n=n)
    theirs = ref(
        "a red apple",
        image=MAPS[0],
        num_inference_steps=5,
        guidance_scale=guidance,
        num_images_per_prompt=n,
        generator=[torch.Generator().manual_seed(7 + k) for k in range(n)],
        adapter_conditioning_scale=0.8,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, ours_with(ours, None, guidance=guidance, n=n)) > 8


def test_sdxl_t2i_adapter_matches_diffusers(tiny_sdxl):
    from diffusers import StableDiffusionXLAdapterPipeline

    ours = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    ours.progress = False
    chans = list(ours.components.unet.config.block_out_channels)
    adapter = tiny_adapter(
        [*chans, chans[-1]], 2 * ours.scale_factor, 6, "full_adapter_xl"
    )  # as SDXL adapters: 16 = 2 x 8
    ref = StableDiffusionXLAdapterPipeline.from_pretrained(tiny_sdxl, adapter=adapter, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    size = ours.native_size
    mine = ours(
        "a red apple",
        steps=4,
        guidance=5.0,
        seed=3,
        scheduler="euler",
        controls=[Control(MAPS[0], adapter, 0.9, 0.0, 0.5)],
    )
    theirs = ref(
        "a red apple",
        image=MAPS[0],
        num_inference_steps=4,
        guidance_scale=5.0,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(3),
        adapter_conditioning_scale=0.9,
        adapter_conditioning_factor=0.5,
    ).images
    assert max_pixel_diff(mine, theirs) <= 1


def test_units_past_the_memory_are_one_line_before_loading(setup, tmp_path, monkeypatch):
    import shutil

    ours, _, _, folder = setup
    copy = shutil.copytree(folder, tmp_path / "cn-copy")
    monkeypatch.setattr("latentdiff.runtime.memory.available_bytes", lambda device: 1000)
    with pytest.raises(UsageError, match=r"controls\[0\].model cn-copy needs about .* fewer control units") as e:
        ours("a red apple", steps=2, controls=[Control(noise_image((64, 64), 1), copy)])
    assert "\n" not in str(e.value) and copy.resolve() not in ours.__dict__.get("_control_nets", {})
