"""The pixel cascade (DeepFloyd IF's layout) against diffusers' IFPipeline and
IFSuperResolutionPipeline on tiny random models (fp32, CPU), prompt embeddings given (T5 is not built
offline; ours are CLIP's): learned variance, dynamic thresholding, CFG on the noise half only, the
SR stage's noised upsampled low-res image and noise level; within 1/255."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentdiff.families.clip import Embeddings

STEPS = 3


def _pipe(cls_name: str, parts: dict):
    import diffusers

    from latentdiff.sampling.loop import make_scheduler

    extra = (
        {"image_noising_scheduler": make_scheduler(parts["upscaler"]["low_res_scheduler"])} if parts["upscaler"] else {}
    )
    pipe = getattr(diffusers, cls_name)(
        unet=parts["unet"],
        scheduler=make_scheduler(parts["scheduler_config"]),
        text_encoder=None,
        tokenizer=None,
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
        **extra,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def stages():
    from latentdiff.families.pixel_tiny import tiny_pixel

    return tiny_pixel(seed=0, sr=False), tiny_pixel(seed=1, sr=True)


def _embeds(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, 7, 32), generator=g), torch.randn((1, 7, 32), generator=g)


def _components(parts):
    from latentdiff.workflows.pixel import pixel_components

    noising = parts["upscaler"].get("low_res_scheduler")
    return pixel_components(parts["unet"], parts["scheduler_config"], noising)


def _to_255(x: torch.Tensor) -> np.ndarray:
    return np.round((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255)


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    assert ref.std() > 5
    assert np.abs(got - ref).max() <= 1


@pytest.mark.parametrize("guidance", [4.0])  # CFG: the variance is the conditional row's
def test_base_matches_if_pipeline(stages, guidance):
    from latentdiff.workflows.pixel import sample_pixels

    base = stages[0]
    cond, uncond = _embeds(0)
    ref = _pipe("IFPipeline", base)(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
    ).images
    gens = [torch.Generator().manual_seed(3)]
    neg = Embeddings(uncond) if guidance > 1 else None
    got = sample_pixels(_components(base), Embeddings(cond), neg, (16, 16), STEPS, guidance, gens)
    _close(_to_255(got), _to_255(ref))


@pytest.mark.parametrize("guidance,level", [(1.0, 0), (4.0, 250)])
def test_super_resolution_matches_if_sr_pipeline(stages, guidance, level):
    from latentdiff.workflows.pixel import super_resolve

    sr = stages[1]
    cond, uncond = _embeds(1)
    low = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(5)) * 2 - 1
    ref = _pipe("IFSuperResolutionPipeline", sr)(
        image=low,
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        noise_level=level,
        generator=torch.Generator().manual_seed(4),
        output_type="pt",
    ).images
    gens = [torch.Generator().manual_seed(4)]
    neg = Embeddings(uncond) if guidance > 1 else None
    got = super_resolve(_components(sr), low, Embeddings(cond), neg, STEPS, guidance, level, gens)
    assert got.shape == (1, 3, 32, 32)
    _close(_to_255(got), _to_255(ref))


def test_noise_level_zero_is_no_augmentation(stages, monkeypatch):
    """Level 0 leaves sqrt(1 - alpha_bar_0) = 0.0064 of the noise in (the cosine schedule's first
    step, up to 0.02 at 3 sigma): the stage's output is that of the clean upsampled image within 2/255
    (1/255 rounding on each side)."""
    import latentdiff.workflows.pixel as pixel

    cond = Embeddings(_embeds(2)[0])
    low = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(6)) * 2 - 1

    def run():
        return super_resolve_0(pixel, _components(stages[1]), low, cond)

    augmented = run()
    real = pixel.sr_channels
    monkeypatch.setattr(pixel, "sr_channels", lambda s, lo, noise, lv, size: real(s, lo, noise * 0, lv, size))
    clean = _to_255(run())
    assert clean.std() > 5 and np.abs(clean - _to_255(augmented)).max() <= 2


def super_resolve_0(pixel, c, low, cond):
    return pixel.super_resolve(c, low, cond, None, STEPS, 1.0, 0, [torch.Generator().manual_seed(7)])


def test_dynamic_thresholding_is_diffusers():
    """IF's percentile clip (Saharia et al. 2022) is the scheduler's: large predictions are pulled in."""
    from latentdiff.families.pixel_tiny import IF_SCHEDULER
    from latentdiff.sampling.loop import make_scheduler

    sched = make_scheduler(IF_SCHEDULER)
    x = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0)) * 4
    out = sched._threshold_sample(x)
    s = torch.quantile(x.abs().reshape(2, -1), 0.95, dim=1).clamp(1, 1).view(2, 1, 1, 1)
    assert torch.allclose(out, x.clamp(-s, s) / s) and out.abs().max() <= 1
