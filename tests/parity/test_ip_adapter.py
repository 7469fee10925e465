"""IP-Adapter image prompts against diffusers' `load_ip_adapter` + `ip_adapter_image(_embeds)` on
the same tiny random adapter files (h94 layout, written as users have them): base, Plus, FaceID,
SDXL, two prompts and two pictures in one prompt; scale 0 and a later plain call give the base
model's pixels exactly."""

import numpy as np
import pytest
import torch
from helpers import max_pixel_diff, noise_image
from ip_adapter_files import FACE_DIM, h94_layout

from latentdiff import ImagePrompt, Pipeline
from latentdiff.sampling.loop import make_scheduler

PICS = [noise_image((64, 64), seed=5), noise_image((48, 80), seed=6)]
STEPS = 4


@pytest.fixture(scope="module")
def sd(tiny_sd1, tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    ours = Pipeline.from_pretrained(tiny_sd1, device="cpu", dtype="fp32")
    ours.progress = False
    root = tmp_path_factory.mktemp("h94")
    folder = h94_layout(root, ours.components.unet)
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    return ours, ref, folder


def ours_with(ours, prompts=None, guidance=6.0, n=1, **kw):
    return ours("a red apple", steps=STEPS, guidance=guidance, seed=7, num_images=n, scheduler="euler",
                image_prompts=prompts, **kw)  # fmt: skip


def reference(ref, folder, weights, scales, guidance=6.0, n=1, encoder="image_encoder", **kw):
    ref.load_ip_adapter(str(folder.parent), subfolder=folder.name, weight_name=weights, image_encoder_folder=encoder)
    ref.set_ip_adapter_scale(scales)
    try:
        size = ref.unet.config.sample_size * ref.vae_scale_factor
        return ref("a red apple", num_inference_steps=STEPS, guidance_scale=guidance, num_images_per_prompt=n,
                   generator=[torch.Generator().manual_seed(7 + k) for k in range(n)], height=size, width=size,
                   **kw).images  # fmt: skip
    finally:
        ref.unload_ip_adapter()


@pytest.mark.parametrize("kind,guidance,n", [("base", 6.0, 1), ("plus", 6.0, 1), ("base", 1.0, 2)])
def test_one_prompt_matches_diffusers(sd, kind, guidance, n):
    ours, ref, folder = sd
    name = "ip-adapter_sd15.safetensors" if kind == "base" else "ip-adapter-plus_sd15.safetensors"
    mine = ours_with(ours, [ImagePrompt(PICS[0], 0.7)], guidance, n, ip_adapter=folder / name)
    theirs = reference(ref, folder, name, 0.7, guidance, n, ip_adapter_image=PICS[0])
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, ours_with(ours, None, guidance, n)) > 8, "the image prompt must change the picture"


def test_two_prompts_and_two_pictures_match_diffusers(sd):
    ours, ref, folder = sd
    base, plus = folder / "ip-adapter_sd15.safetensors", folder / "ip-adapter-plus_sd15.safetensors"
    prompts = [ImagePrompt(PICS[0], 0.5, adapter=base), ImagePrompt(PICS[1], 0.9, adapter=plus)]
    theirs = reference(ref, folder, [base.name, plus.name], [0.5, 0.9], ip_adapter_image=PICS)
    assert max_pixel_diff(ours_with(ours, prompts), theirs) <= 1
    # several pictures in one prompt: their tokens side by side, as diffusers takes a list per adapter
    mine = ours_with(ours, [ImagePrompt(PICS, 0.8)], ip_adapter=plus)
    theirs = reference(ref, folder, plus.name, 0.8, ip_adapter_image=[PICS])
    assert max_pixel_diff(mine, theirs) <= 1


def test_faceid_from_an_embedding_file_matches_diffusers(sd, tmp_path):
    ours, ref, folder = sd
    face = torch.randn(FACE_DIM, generator=torch.Generator().manual_seed(4))
    np.save(tmp_path / "face.npy", face.numpy())
    ours.allow_pickle = True  # the .bin, as from_pretrained(..., allow_pickle=True) would allow it
    try:
        mine = ours_with(
            ours, [ImagePrompt(tmp_path / "face.npy", 0.8)], ip_adapter=folder / "ip-adapter-faceid_sd15.bin"
        )
    finally:
        ours.allow_pickle = False
    embeds = torch.stack([torch.zeros(1, FACE_DIM), face[None]])  # (negative, positive) x 1 face
    theirs = reference(
        ref, folder, "ip-adapter-faceid_sd15.safetensors", 0.8, encoder=None, ip_adapter_image_embeds=[embeds]
    )
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, ours_with(ours)) > 8


def test_scale_zero_and_a_later_plain_call_give_the_base_pixels(sd):
    ours, _, folder = sd
    base = ours_with(ours)
    unet = ours.components.unet
    processors = dict(unet.attn_processors)
    zero = ours_with(ours, [ImagePrompt(PICS[0], 0.0)], ip_adapter=folder / "ip-adapter-plus_sd15.safetensors")
    assert max_pixel_diff(zero, base) == 0
    ours_with(ours, [ImagePrompt(PICS[0], 1.0)], ip_adapter=folder / "ip-adapter_sd15.safetensors")
    assert max_pixel_diff(ours_with(ours), base) == 0
    assert dict(unet.attn_processors) == processors and unet.encoder_hid_proj is None
    assert unet.config.encoder_hid_dim_type is None


def test_faceid_lora_is_taken_out_after_the_call(sd, tmp_path):
    ours, _, folder = sd
    base = ours_with(ours)
    unet = ours.components.unet
    linears = {n: type(m) for n, m in unet.named_modules()}
    np.save(tmp_path / "faces.npy", np.random.default_rng(1).standard_normal((2, FACE_DIM)).astype(np.float32))
    faceid = folder / "ip-adapter-faceid_sd15.safetensors"
    zero = ours_with(ours, [ImagePrompt(tmp_path / "faces.npy", 0.0)], ip_adapter=faceid)
    assert max_pixel_diff(zero, base) > 0, "the FaceID LoRA acts at scale 0 too, as in diffusers"
    assert {n: type(m) for n, m in unet.named_modules()} == linears and not getattr(unet, "peft_config", None)
    assert max_pixel_diff(ours_with(ours), base) == 0


def test_an_abandoned_call_leaves_no_adapter_behind(sd):
    ours, _, folder = sd
    base = ours_with(ours)

    def started():
        it = ours.iter_images(
            ["a red apple"] * 2, steps=STEPS, guidance=6.0, seed=7, scheduler="euler",
            image_prompts=[ImagePrompt(PICS[0])], ip_adapter=folder / "ip-adapter_sd15.safetensors",
        )  # fmt: skip
        next(it)  # the adapter is in the UNet while the generator waits after its first batch
        assert ours.components.unet.encoder_hid_proj is not None
        return it

    ours.max_batch, saved = 1, ours.max_batch
    try:
        first = started()
        second = started()  # takes the first's adapter out, puts its own in
        first.close()  # closing the abandoned one later does not undo the second's
        assert ours.components.unet.encoder_hid_proj is not None
        assert len(list(second)) == 1
    finally:
        ours.max_batch = saved
    assert max_pixel_diff(ours_with(ours), base) == 0


def test_sdxl_matches_diffusers(tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    ours = Pipeline.from_pretrained(tiny_sdxl, device="cpu", dtype="fp32")
    ours.progress = False
    folder = h94_layout(tmp_path, ours.components.unet, sdxl=True)
    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(ours.components.scheduler_config, "euler")
    size = ours.native_size
    mine = ours("a red apple", steps=STEPS, guidance=5.0, seed=7, scheduler="euler", width=size, height=size,
                image_prompts=[ImagePrompt(PICS[1], 0.9)], ip_adapter=folder / "ip-adapter_sdxl.safetensors")  # fmt: skip
    theirs = reference(ref, folder, "ip-adapter_sdxl.safetensors", 0.9, 5.0, ip_adapter_image=PICS[1])
    plain = ours("a red apple", steps=STEPS, guidance=5.0, seed=7, scheduler="euler", width=size, height=size)
    assert max_pixel_diff(mine, theirs) <= 1
    assert max_pixel_diff(mine, plain) > 8
