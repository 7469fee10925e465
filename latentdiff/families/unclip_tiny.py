"""Tiny seeded Stable unCLIP models for tests and benchmarks, shaped as diffusers' own fast tests shape
them (tests/pipelines/stable_unclip): SD 2's tiny UNet with a projection class embedding of twice the
CLIP embedding's width, an image normalizer and a squared-cosine image-noising scheduler, a tiny CLIP
vision encoder with its processor (variations, StableUnCLIPImg2ImgPipeline) and a one-layer prior on a
tiny CLIP text encoder with projection (StableUnCLIPPipeline); and the model_index.json of that layout."""

from __future__ import annotations

import torch

from latentdiff.families.clip import clip_text_config
from latentdiff.families.sd import WORDS, tiny_arch, tiny_parts
from latentdiff.prompts.tokenizer import build_tokenizer

WIDTH = 32  # the CLIP embedding's width, the text encoders' and the vision encoder's
IMAGE_SIZE = 32  # the vision encoder's input side
KARLO_SIDE = 8  # the tiny Karlo pixel decoder's side; its SR stages make 16 px
NOISING = {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2"}
PRIOR_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "variance_type": "fixed_small_log",
    "prediction_type": "sample",
    "num_train_timesteps": 1000,
    "clip_sample": True,
    "clip_sample_range": 5.0,
    "beta_schedule": "squaredcos_cap_v2",
}


def unclip_index(components, index: dict) -> dict:
    """model_index.json of StableUnCLIPImg2ImgPipeline (with an image encoder) or StableUnCLIPPipeline
    (with a prior); a model with both names both, and either pipeline loads the parts it takes."""
    parts = components.unclip
    index = {k: v for k, v in index.items() if k not in ("safety_checker", "requires_safety_checker")}
    out = {**index, "image_normalizer": ["stable_diffusion", "StableUnCLIPImageNormalizer"]}
    out["image_noising_scheduler"] = ["diffusers", parts["image_noising_scheduler"].get("_class_name", "DDPMScheduler")]
    encoder = parts.get("image_encoder") is not None
    out["image_encoder"] = ["transformers", "CLIPVisionModelWithProjection"] if encoder else [None, None]
    out["feature_extractor"] = ["transformers", "CLIPImageProcessor"] if encoder else [None, None]
    if parts.get("prior") is not None:
        out.update(
            prior=["diffusers", "PriorTransformer"],
            prior_text_encoder=["transformers", "CLIPTextModelWithProjection"],
            prior_tokenizer=["transformers", "CLIPTokenizer"],
            prior_scheduler=["diffusers", parts["prior_scheduler"].get("_class_name", "DDPMScheduler")],
        )
    text_only = parts.get("prior") is not None and not encoder
    out["_class_name"] = "StableUnCLIPPipeline" if text_only else "StableUnCLIPImg2ImgPipeline"
    return out


def tiny_unclip(seed: int = 0, image_encoder: bool = True, prior: bool = True) -> dict:
    """Seeded tiny modules: the fields of models.components.Components with `unclip` holding the parts
    beside the UNet (families/unclip.py)."""
    from diffusers import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    arch = tiny_arch("sd2")
    parts = tiny_parts(arch, seed)
    torch.manual_seed(seed)
    unet_config = {**arch["unet"], "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * WIDTH}
    parts["unet"] = UNet2DConditionModel(**unet_config, upcast_attention=True).eval()
    unclip = {"image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=WIDTH).eval()}
    unclip["image_noising_scheduler"] = dict(NOISING)
    unclip.update(tiny_vision() if image_encoder else {"image_encoder": None, "feature_extractor": None})
    if prior:
        tokenizer = build_tokenizer(WORDS, 200, 77)
        unclip.update(
            prior=_tiny_prior(),
            prior_text_encoder=_prior_text_encoder(tokenizer),
            prior_tokenizer=tokenizer,
            prior_scheduler=dict(PRIOR_SCHEDULER),
        )
    parts["unclip"] = unclip
    return parts


def tiny_kandinsky_prior(seed: int = 0) -> dict:
    """KandinskyV22PriorPipeline's parts, tiny and seeded: a prior on a CLIP text encoder with
    projection, the CLIP vision encoder and processor it keeps for zero embeddings, an UnCLIPScheduler."""
    from diffusers import UnCLIPScheduler

    tokenizer = build_tokenizer(WORDS, 200, 77)
    torch.manual_seed(seed)
    prior = _tiny_prior()
    vision = tiny_vision()
    return dict(
        prior=prior,
        text_encoder=_prior_text_encoder(tokenizer),
        tokenizer=tokenizer,
        image_encoder=vision["image_encoder"],
        image_processor=vision["feature_extractor"],
        scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=10.0,
        ),  # fmt: skip
    )


def tiny_karlo(seed: int = 4):
    """A tiny UnCLIPPipeline: the tiny Kandinsky prior's prior, text tower and tokenizer, with Karlo's
    prior scheduler, a tiny pixel decoder with learned variance, its text_proj and two SR UNets."""
    from diffusers import UnCLIPPipeline, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel

    parts = tiny_kandinsky_prior(seed)
    blocks = (16, 32)
    decoder = UNet2DConditionModel(
        sample_size=KARLO_SIDE, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=blocks,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=24, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type="identity", norm_num_groups=8,
    )  # fmt: skip
    sr = dict(sample_size=2 * KARLO_SIDE, layers_per_block=1, block_out_channels=blocks, in_channels=6, out_channels=3,
              down_block_types=("ResnetDownsampleBlock2D",) * 2, up_block_types=("ResnetUpsampleBlock2D",) * 2,
              norm_num_groups=8)  # fmt: skip
    return UnCLIPPipeline(
        prior=parts["prior"],
        decoder=decoder,
        text_proj=UnCLIPTextProjModel(clip_embeddings_dim=WIDTH, time_embed_dim=4 * blocks[0], cross_attention_dim=24),
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        super_res_first=UNet2DModel(**sr),
        super_res_last=UNet2DModel(**sr),
        prior_scheduler=UnCLIPScheduler(**{k: v for k, v in PRIOR_SCHEDULER.items() if k != "_class_name"}),
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"),
    )


def _tiny_prior():
    """A one-layer PriorTransformer whose embedding statistics are not its zero initialisation (which
    would make every embedding it samples zero), as diffusers' own prior tests set them."""
    from diffusers import PriorTransformer

    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=WIDTH, num_layers=1)
    with torch.no_grad():
        prior.clip_mean.normal_(0, 0.1)
        prior.clip_std.uniform_(0.5, 1.5)
    return prior.eval()


def _prior_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    section = dict(hidden_size=WIDTH, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                   projection_dim=WIDTH, hidden_act="gelu")  # fmt: skip
    return CLIPTextModelWithProjection(CLIPTextConfig(**clip_text_config(section, tokenizer))).eval()


def tiny_vision() -> dict:
    """A tiny CLIP vision encoder with projection and the processor that feeds it."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=WIDTH, projection_dim=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                              image_size=IMAGE_SIZE, intermediate_size=37, patch_size=4)  # fmt: skip
    processor = CLIPImageProcessor(crop_size=IMAGE_SIZE, size=IMAGE_SIZE)
    return {"image_encoder": CLIPVisionModelWithProjection(config).eval(), "feature_extractor": processor}
