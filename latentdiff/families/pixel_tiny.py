"""Tiny seeded pixel models in DeepFloyd IF's layouts (stage I base, stage II super-resolution), for
tests: the block types, text addition embedding and schedulers of IF's released configs, scaled down."""

from __future__ import annotations

import torch

from latentdiff.families.clip import clip_text_config
from latentdiff.families.pixel_space import PixelSpace
from latentdiff.families.sd import WORDS, tiny_arch
from latentdiff.prompts.tokenizer import build_tokenizer

# IF's schedules: cosine betas; the denoising one with dynamic thresholding and a learned variance.
IF_NOISING = dict(
    _class_name="DDPMScheduler",
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
)
IF_SCHEDULER = dict(
    IF_NOISING,
    thresholding=True,
    dynamic_thresholding_ratio=0.95,
    sample_max_value=1.0,
    prediction_type="epsilon",
    variance_type="learned_range",
)


def if_unet(sample_size: int, sr: bool, channels=(32, 64), text_dim: int = 32) -> dict:
    """An IF-layout UNet config: ResNet up/down-sampling blocks, simple cross-attention at the lower
    resolutions, the text's attention-pooled embedding added to the time embedding; an SR stage takes
    3 more input channels and its noise level as a timestep-embedded class label."""
    n = len(channels)
    down = ("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (n - 1)
    up = ("SimpleCrossAttnUpBlock2D",) * (n - 1) + ("ResnetUpsampleBlock2D",)
    config = dict(
        sample_size=sample_size,
        in_channels=6 if sr else 3,
        out_channels=6,
        layers_per_block=1,
        block_out_channels=tuple(channels),
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=channels[-1],
        encoder_hid_dim=text_dim,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        norm_num_groups=8,
    )
    if sr:
        config.update(class_embed_type="timestep", mid_block_scale_factor=1.414, time_embedding_act_fn="gelu")
    return config


def tiny_pixel(seed: int = 0, sr: bool = False, side: int | None = None) -> dict:
    """Components' fields of a tiny pixel base (16 px) or SR stage (16 -> 32 px; `side`: another output size)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(WORDS, 200, 77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**if_unet(side or (32 if sr else 16), sr))
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_text_config(tiny_arch("sd2")["text_encoder"], tokenizer)))
    upscaler = {"low_res_scheduler": dict(IF_NOISING), "max_noise_level": IF_NOISING["num_train_timesteps"] - 1}
    return dict(
        unet=unet.eval(),
        vae=PixelSpace(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(IF_SCHEDULER),
        upscaler=upscaler if sr else {},
    )
