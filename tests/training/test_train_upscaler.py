"""Training a diffusion upscaler on finetune's loop: a fresh UNet from an architecture YAML that takes
a base model's text encoder, a 2x VAE; the result loads in diffusers' StableDiffusionUpscalePipeline
and matches `latentdiff upscale`, and resume is exact."""

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import assert_same_last_checkpoint, max_pixel_diff, noise_image
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from latentdiff import UsageError
from latentdiff.cli.main import main
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.loop import finetune

COLORS = ["red", "green", "blue", "orange"]


def upscaler_arch(base) -> dict:
    """A tiny 2x upscaler: 7-channel UNet with noise-level classes, a 2-block VAE, the base's text encoder."""
    return {
        "unet": dict(
            sample_size=16,
            in_channels=7,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=[32, 64],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=8,
            num_class_embeds=101,
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=[16, 32],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            norm_num_groups=8,
            layers_per_block=1,
            sample_size=32,
            scaling_factor=0.3,
        ),
        "text_encoder": str(base),
        "scheduler": {
            "_class_name": "DDIMScheduler",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "num_train_timesteps": 1000,
            "prediction_type": "v_prediction",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        },
        "low_res_scheduler": {
            "_class_name": "DDPMScheduler",
            "beta_schedule": "scaled_linear",
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "num_train_timesteps": 1000,
        },
        "max_noise_level": 100,
        "defaults": {"steps": 3, "guidance": 1.0, "noise_level": 10},
    }


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory, tiny_sd1):
    path = tmp_path_factory.mktemp("arch") / "sr.yaml"
    path.write_text(yaml.safe_dump(upscaler_arch(tiny_sd1)))
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds32")
    for i, c in enumerate(COLORS):
        im = Image.new("RGB", (32, 32), "white")
        draw = ImageDraw.Draw(im)
        draw.ellipse((4 + i, 4, 28, 26 - i), fill=c)
        draw.rectangle((0, 0, 5, 31), fill="black")  # left is not right: flips show
        im.save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {c} circle")
    return root


def cfg(pictures, arch_file, out, **kw):
    base = dict(
        dataset=str(pictures),
        model=str(arch_file),
        out=str(out),
        method="full",
        max_steps=2,
        batch_size=2,
        resolution=32,
        lr=1e-3,
        checkpoint_every=1,
        log_every=1,
        seed=3,
        flip=True,
        ema_decay=0.9,
    )
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(pictures, arch_file, tmp_path_factory):
    return finetune(cfg(pictures, arch_file, tmp_path_factory.mktemp("runs") / "sr"))


def test_output_loads_in_diffusers_and_matches_latentdiff_upscale(trained, tmp_path, capsys):
    from diffusers import StableDiffusionUpscalePipeline

    index = json.loads((trained / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionUpscalePipeline" and index["max_noise_level"] == 100
    ref = StableDiffusionUpscalePipeline.from_pretrained(trained)
    ref.set_progress_bar_config(disable=True)
    assert ref.vae.config.scaling_factor == 0.08333  # diffusers' own value: the trained VAE was rescaled to it
    low = tmp_path / "low.png"
    noise_image((16, 16), seed=4).save(low)
    assert (
        main(
            [
                "upscale",
                str(low),
                "--model",
                str(trained),
                "--prompt",
                "a red circle",
                "--guidance",
                "3",
                "--noise-level",
                "30",
                "--seed",
                "2",
                "--out",
                str(tmp_path / "u"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    mine = Image.open(capsys.readouterr().out.strip())
    theirs = ref(
        "a red circle",
        image=Image.open(low),
        num_inference_steps=3,
        guidance_scale=3.0,
        noise_level=30,
        generator=torch.Generator("cpu").manual_seed(2),
    ).images[0]
    assert mine.size == theirs.size == (32, 32)
    assert np.asarray(mine).std() > 5 and max_pixel_diff([mine], [theirs]) <= 1


def test_text_encoder_stays_the_base_models(trained, tiny_sd1):
    names = load_file(str(ckpt.latest_checkpoint(trained) / "trainable.safetensors")).keys()
    assert names and all(k.startswith("unet.") for k in names)
    saved = load_file(str(trained / "text_encoder" / "model.safetensors"))
    base = load_file(str(tiny_sd1 / "text_encoder" / "model.safetensors"))
    assert saved.keys() == base.keys() and all(torch.equal(saved[k], base[k]) for k in base)


def test_resume_after_step_one_equals_an_uninterrupted_run(trained, pictures, arch_file, tmp_path):
    split = tmp_path / "split"
    finetune(cfg(pictures, arch_file, split, max_steps=1))
    finetune(cfg(pictures, arch_file, split, resume=True))
    assert_same_last_checkpoint(trained, split)


def test_rescaled_vae_sees_and_decodes_the_same_latents():
    from diffusers import AutoencoderKL

    from latentdiff.models.build import rescale_latents

    arch = upscaler_arch("unused")["vae"]
    torch.manual_seed(0)
    vae = AutoencoderKL(**arch).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        before = vae.encode(x).latent_dist
        old = before.mean * 0.3
        rescale_latents(vae, 0.08333)
        after = vae.encode(x).latent_dist
        assert torch.allclose(after.mean * 0.08333, old, atol=1e-5)
        assert torch.allclose(after.std * 0.08333, before.std * 0.3, atol=1e-5)
        redone = vae.decode(old / 0.08333).sample
        torch.manual_seed(0)
        fresh = AutoencoderKL(**arch).eval()
        assert torch.allclose(redone, fresh.decode(old / 0.3).sample, atol=1e-5)


def test_bad_upscaler_configs_are_one_clear_error(pictures, tiny_sd1, tmp_path):
    arch = upscaler_arch(tiny_sd1)
    arch["unet"]["num_class_embeds"] = 50  # fewer classes than noise levels
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(arch))
    with pytest.raises(UsageError, match="num_class_embeds above it"):
        finetune(cfg(pictures, path, tmp_path / "bad"))
    with pytest.raises(UsageError, match="--validate-every"):
        path.write_text(yaml.safe_dump(upscaler_arch(tiny_sd1)))
        finetune(cfg(pictures, path, tmp_path / "val", validate_every=1))


def test_export_keeps_the_upscaler_layout(trained, tmp_path):
    from latentdiff.training.export import export_checkpoint

    out = export_checkpoint(trained, tmp_path / "exported")
    assert json.loads((out / "model_index.json").read_text()) == json.loads((trained / "model_index.json").read_text())
    assert (out / "low_res_scheduler" / "scheduler_config.json").is_file()
    for part in ("unet", "vae"):
        a = load_file(str(out / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(trained / part / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in b), part


def test_low_res_images_come_from_the_pixels_of_the_latents(pictures, tiny_sd1):
    """Cached (both flips) and encoded-every-step batches: each low-res image is its latent's
    picture downsampled by the VAE's factor, in the same orientation."""
    from latentdiff.models.build import build_components
    from latentdiff.training.data.dataset import ImageCaptionDataset
    from latentdiff.training.data.scan import scan_dataset
    from latentdiff.training.upscaler import UpscalerSource, downsample

    c = build_components(upscaler_arch(tiny_sd1), [])
    records = scan_dataset(pictures, 32).records
    captions = [r.caption for r in records]
    dataset = ImageCaptionDataset(records, 32, flip=False)
    kw = dict(train_text=False, caption_dropout=0.0, device=torch.device("cpu"), dtype=torch.float32, progress=False)
    cached = UpscalerSource(c, dataset, captions, cache=True, flip=True, **kw)
    per_step = UpscalerSource(c, dataset, captions, cache=False, flip=False, **kw)
    idx, gen = [0, 3, 1], lambda: torch.Generator().manual_seed(5)
    z, _ = cached.latents(idx, gen(), 0)  # (latents, size ids)
    views = torch.randint(0, 2, (3,), generator=gen())  # the source's first draw
    assert 0 < views.sum() < 3, "pick a seed that draws both orientations"
    plain = torch.cat([pixels for pixels, _ in dataset.unaugmented()])  # every image, center crop, no flip
    for j, (i, v) in enumerate(zip(idx, views)):
        px = plain[i].flip(-1) if v else plain[i]
        assert torch.allclose(cached.low[j], downsample(px[None], 2)[0], atol=1e-5)
    assert z.shape == (3, 4, 16, 16) and cached.low.shape == (3, 3, 16, 16)
    per_step.latents(idx, gen(), 0)
    assert torch.allclose(per_step.low, torch.stack([downsample(plain[i][None], 2)[0] for i in idx]))
    cond = cached.image_cond(idx, gen())
    assert (
        cond.concat.shape == (3, 3, 16, 16) and 0 <= int(cond.class_labels.min()) <= int(cond.class_labels.max()) <= 100
    )
