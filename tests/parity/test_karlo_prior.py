"""Karlo's prior format (diffusers' UnCLIPPipeline: prior/, text_encoder/, tokenizer/, prior_scheduler/
beside a pixel decoder and two SR stages): `--prior DIR` reads a saved UnCLIPPipeline folder, and our
prior sampling equals the image embedding UnCLIPPipeline's prior stage hands its decoder (caught at
its text_proj), on one tiny random model with the same seed."""

from __future__ import annotations

import pytest
import torch

SIDE = 8  # the tiny pixel decoder's side; the SR stages make 16 px


def tiny_karlo(seed: int = 4):
    """A tiny UnCLIPPipeline: the tiny Kandinsky prior's prior, text tower and tokenizer, with Karlo's
    prior scheduler, a tiny pixel decoder with learned variance, its text_proj and two SR UNets."""
    from diffusers import UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    from latentdiff.families.unclip_tiny import WIDTH, tiny_kandinsky_prior
    from latentdiff.training.prior_scratch import SCHEDULER

    parts = tiny_kandinsky_prior(seed)
    blocks = (16, 32)
    decoder = UNet2DConditionModel(
        sample_size=SIDE, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=blocks,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=24, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type="identity", norm_num_groups=8,
    )  # fmt: skip
    sr = dict(sample_size=2 * SIDE, layers_per_block=1, block_out_channels=blocks, in_channels=6, out_channels=3,
              down_block_types=("ResnetDownsampleBlock2D",) * 2, up_block_types=("ResnetUpsampleBlock2D",) * 2,
              norm_num_groups=8)  # fmt: skip
    scheduler = {k: v for k, v in SCHEDULER.items() if k != "_class_name"}
    return UnCLIPPipeline(
        prior=parts["prior"],
        decoder=decoder,
        text_proj=UnCLIPTextProjModel(clip_embeddings_dim=WIDTH, time_embed_dim=4 * blocks[0], cross_attention_dim=24),
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        super_res_first=UNet2DModel(**sr),
        super_res_last=UNet2DModel(**sr),
        prior_scheduler=UnCLIPScheduler(**scheduler),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"),
    )


@pytest.fixture(scope="module")
def karlo(tmp_path_factory):
    from latentdiff.runtime.libraries import quiet_libraries

    quiet_libraries()
    pipe = tiny_karlo()
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("models") / "karlo"
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe, folder


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_prior_matches_unclip_pipelines_prior_stage(karlo, guidance):
    from latentdiff.families.unclip import prior_embeddings
    from latentdiff.models.assemble import load_prior

    pipe, folder = karlo
    seen = []
    hook = pipe.text_proj.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["image_embeddings"]), with_kwargs=True)  # fmt: skip
    try:
        pipe("a red circle", prior_num_inference_steps=3, decoder_num_inference_steps=2, super_res_num_inference_steps=2,
             prior_guidance_scale=guidance, decoder_guidance_scale=guidance, generator=torch.Generator().manual_seed(9),
             output_type="np")  # fmt: skip
    finally:
        hook.remove()
    parts = load_prior(folder)
    assert parts["prior_scheduler"]["prediction_type"] == "sample"
    got = prior_embeddings(parts, ["a red circle"], 3, guidance, [torch.Generator().manual_seed(9)], True)
    assert got.shape == seen[0].shape == (1, 32)
    assert torch.allclose(got, seen[0], atol=1e-5), (got - seen[0]).abs().max()


def test_generate_takes_a_karlo_prior(karlo, tiny_unclip):
    from latentdiff import Pipeline

    _, folder = karlo
    images = Pipeline.from_pretrained(tiny_unclip)("a red circle", steps=2, prior=str(folder), prior_steps=2, seed=1)
    assert images[0].info["latentdiff"]["prior"] == str(folder)
