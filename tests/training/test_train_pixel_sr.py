"""Training a pixel super-resolution stage (DeepFloyd IF's stage II layout) on finetune's loop: a fresh
UNet from an architecture YAML with `vae: pixel` and a base model's text encoder; the low-res image is
the picture downsampled 2x, upsampled back and noised to a random level per sample; the learned
variance trains by the hybrid loss. The result loads in diffusers' IFSuperResolutionPipeline and
matches our stage; resume is exact."""

import json

import pytest
import torch
import yaml
from helpers import assert_same_last_checkpoint
from test_train_upscaler import cfg, pictures  # noqa: F401 (the fixture and the run config)

from latentdiff.families.pixel_tiny import IF_NOISING, IF_SCHEDULER, if_unet
from latentdiff.training.loop import finetune


def pixel_sr_arch(base) -> dict:
    return {
        "unet": if_unet(32, sr=True),
        "vae": "pixel",
        "text_encoder": str(base),
        "scheduler": dict(IF_SCHEDULER),
        "image_noising_scheduler": dict(IF_NOISING),
        "defaults": {"scale": 2, "steps": 3, "guidance": 1.0, "noise_level": 50},
    }


@pytest.fixture(scope="module")
def pixel_arch(tmp_path_factory, tiny_sd1):
    path = tmp_path_factory.mktemp("arch") / "pixel-sr.yaml"
    path.write_text(yaml.safe_dump(pixel_sr_arch(tiny_sd1)))
    return path


@pytest.fixture(scope="module")
def trained(pictures, pixel_arch, tmp_path_factory):  # noqa: F811
    return finetune(cfg(pictures, pixel_arch, tmp_path_factory.mktemp("runs") / "pixel-sr"))


def test_stage_loads_in_if_super_resolution_pipeline_and_matches_ours(trained):
    from diffusers import IFSuperResolutionPipeline

    from latentdiff.families.clip import Embeddings
    from latentdiff.workflows.pixel import load_pixel_stage, super_resolve

    index = json.loads((trained / "model_index.json").read_text())
    assert index["_class_name"] == "IFSuperResolutionPipeline" and "vae" not in index
    ref = IFSuperResolutionPipeline.from_pretrained(trained, text_encoder=None, tokenizer=None)
    ref.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn((1, 7, 32), generator=g), torch.randn((1, 7, 32), generator=g)
    low = torch.rand((1, 3, 16, 16), generator=g) * 2 - 1
    args = dict(num_inference_steps=3, guidance_scale=3.0, noise_level=40, output_type="pt")
    theirs = ref(
        image=low, prompt_embeds=cond, negative_prompt_embeds=uncond, generator=torch.Generator().manual_seed(2), **args
    ).images
    stage = load_pixel_stage(trained)
    mine = super_resolve(
        stage, low, Embeddings(cond), Embeddings(uncond), 3, 3.0, 40, [torch.Generator().manual_seed(2)]
    )
    assert mine.shape == theirs.shape == (1, 3, 32, 32)
    assert (mine - theirs).abs().max() * 127.5 <= 1


def test_resume_after_step_one_equals_an_uninterrupted_run(trained, pictures, pixel_arch, tmp_path):  # noqa: F811
    split = tmp_path / "split"
    finetune(cfg(pictures, pixel_arch, split, max_steps=1))
    finetune(cfg(pictures, pixel_arch, split, resume=True))
    assert_same_last_checkpoint(trained, split)


def test_vlb_is_zero_for_the_true_posterior_and_trains_only_the_variance():
    from latentdiff.sampling.loop import make_scheduler
    from latentdiff.training.vlb import vlb_loss

    sched = make_scheduler(IF_SCHEDULER)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((2, 3, 8, 8), generator=g) * 1.6 - 0.8
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([10, 600])
    x_t = sched.add_noise(x0, noise, t)
    eps = noise.clone().requires_grad_(True)
    v = torch.full(x0.shape, -1.0, requires_grad=True)  # log-variance = the posterior's (beta~_t)
    loss = vlb_loss(sched, x0, x_t, t, eps, v)
    assert loss.abs().max() < 1e-4
    mid = torch.zeros(x0.shape, requires_grad=True)
    vlb_loss(sched, x0, x_t, t, eps, mid).sum().backward()
    assert eps.grad is None and mid.grad.abs().sum() > 0
    t0 = vlb_loss(sched, x0, sched.add_noise(x0, noise, torch.tensor([0, 0])), torch.tensor([0, 0]), eps, v)
    assert torch.isfinite(t0).all() and (t0 > 0).all()  # the decoder's NLL in bits


def test_images_go_in_as_pixels(tiny_sd1):
    from latentdiff.models.build import build_components

    c = build_components(pixel_sr_arch(tiny_sd1), [])
    x = torch.rand((1, 3, 8, 8))
    assert torch.equal(c.vae.encode(x).latent_dist.sample(), x) and torch.equal(c.vae.decode(x).sample, x)


def test_a_pixel_base_trains_and_loads_in_if_pipeline(pictures, tiny_sd1, tmp_path):  # noqa: F811
    """IF's stage I layout (3 input channels, learned variance) on the same loop: 1 step at 16 px."""
    from diffusers import IFPipeline

    from latentdiff.families.clip import Embeddings
    from latentdiff.workflows.pixel import load_pixel_stage, sample_pixels

    arch = {**pixel_sr_arch(tiny_sd1), "unet": if_unet(16, sr=False)}
    del arch["image_noising_scheduler"]
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(arch))
    out = finetune(cfg(pictures, path, tmp_path / "run", max_steps=1, resolution=16))
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "IFPipeline"
    ref = IFPipeline.from_pretrained(out, text_encoder=None, tokenizer=None)
    ref.set_progress_bar_config(disable=True)
    cond = torch.randn((1, 7, 32), generator=torch.Generator().manual_seed(1))
    theirs = ref(prompt_embeds=cond, negative_prompt_embeds=cond * 0, num_inference_steps=2, guidance_scale=2.0,
                 generator=torch.Generator().manual_seed(2), output_type="pt").images  # fmt: skip
    gens = [torch.Generator().manual_seed(2)]
    mine = sample_pixels(load_pixel_stage(out), Embeddings(cond), Embeddings(cond * 0), (16, 16), 2, 2.0, gens)
    assert mine.shape == theirs.shape and (mine - theirs).abs().max() * 127.5 <= 1


def emoji_sr_arch(base) -> dict:
    """The emoji stage's schedules (configs/models/emoji-pixel-sr.yaml: v-prediction, DDIM from the last
    timestep, no learned variance) on the tiny UNet, augmentation levels capped at 30."""
    recipe = yaml.safe_load(open("configs/models/emoji-pixel-sr.yaml"))
    keep = ("scheduler", "image_noising_scheduler")
    return {**pixel_sr_arch(base), **{k: recipe[k] for k in keep}, "max_noise_level": 30}


def test_a_v_stage_without_variance_trains_only_its_noise_half_and_loads_in_if_pipeline(pictures, tiny_sd1, tmp_path):  # noqa: F811
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline

    from latentdiff.families.clip import Embeddings
    from latentdiff.models.build import build_components
    from latentdiff.sampling.loop import make_scheduler
    from latentdiff.training.objective import diffusion_loss
    from latentdiff.training.upscaler import noise_augment
    from latentdiff.workflows.pixel import load_pixel_stage, super_resolve

    arch = emoji_sr_arch(tiny_sd1)
    c = build_components(arch, [])
    assert c.upscaler["max_noise_level"] == 30  # training's levels; generation takes up to 999 (below)
    g = torch.Generator().manual_seed(0)
    x0, ctx = torch.rand((2, 3, 32, 32), generator=g) * 2 - 1, Embeddings(torch.randn((2, 7, 32), generator=g))
    noising = make_scheduler(arch["image_noising_scheduler"])
    cond = noise_augment(x0[:, :, ::2, ::2], noising, 30, g, (32, 32))
    assert cond.class_labels.max() <= 30
    diffusion_loss(c.unet, DDPMScheduler.from_config(arch["scheduler"]), x0, ctx, g, image_cond=cond).backward()
    grad = c.unet.conv_out.weight.grad
    assert grad[:3].abs().sum() > 0 and grad[3:].abs().sum() == 0  # no hybrid loss on an unread variance

    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(arch))
    out = finetune(cfg(pictures, path, tmp_path / "run", max_steps=1))
    ref = IFSuperResolutionPipeline.from_pretrained(out, text_encoder=None, tokenizer=None)
    ref.set_progress_bar_config(disable=True)
    emb, low = torch.randn((1, 7, 32), generator=g), torch.rand((1, 3, 16, 16), generator=g) * 2 - 1
    theirs = ref(image=low, prompt_embeds=emb, negative_prompt_embeds=emb * 0, num_inference_steps=2, guidance_scale=1.0,
                 noise_level=500, generator=torch.Generator().manual_seed(2), output_type="pt").images  # fmt: skip
    mine = super_resolve(
        load_pixel_stage(out), low, Embeddings(emb), None, 2, 1.0, 500, [torch.Generator().manual_seed(2)]
    )
    assert type(ref.scheduler).__name__ == "DDIMScheduler" and (mine - theirs).abs().max() * 127.5 <= 1


def test_a_pixel_stage_refuses_a_training_level_beyond_its_noising_schedule(tiny_sd1):
    from latentdiff.errors import UsageError
    from latentdiff.models.build import build_components

    with pytest.raises(UsageError, match="max_noise_level is a whole number from 0 to 999"):
        build_components({**pixel_sr_arch(tiny_sd1), "max_noise_level": 1000}, [])
