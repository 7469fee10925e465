"""Tiny random models for tests and benchmarks (no downloads): SD1-like and SD2-like."""

from __future__ import annotations

from pathlib import Path

from latentdiff.models.build import build_components
from latentdiff.models.components import save_components
from latentdiff.runtime.files import as_umask_allows
from latentdiff.models.components import Components
from latentdiff.prompts.tokenizer import build_tokenizer

WORDS = ["a red apple", "a green pear on a table", "photo of a cat", "woman biking: dark skin tone",
         "flag: Chile", "an astronaut riding a horse", "blue sky with clouds", "smiling face with hearts"]


def tiny_arch(kind: str = "sd1") -> dict:
    """kind: sd1, sd2, or sd1-inpaint (a 9-channel inpainting UNet: latents, mask, masked image)."""
    sd2 = kind == "sd2"
    return {
        "unet": dict(
            sample_size=16, in_channels=9 if kind.endswith("inpaint") else 4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=(2, 4) if sd2 else 8, use_linear_projection=sd2,
        ),
        "vae": dict(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=8, layers_per_block=1, sample_size=64, scaling_factor=0.18215,
        ),
        "text_encoder": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                             hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=32),
        "tokenizer": {"num_merges": 200, "max_length": 77},
        "scheduler": {
            "_class_name": "DDIMScheduler" if sd2 else "PNDMScheduler",
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1,
            "clip_sample": False, "skip_prk_steps": True,
            "prediction_type": "v_prediction" if sd2 else "epsilon",
        },
    }


def make_tiny_model(out: Path, kind: str = "sd1", seed: int = 0, defaults: dict | None = None,
                    half: bool = False) -> Path:
    """Write a tiny seeded diffusers-format model to `out` and return it; `half`: weights stored in
    fp16, as the shipped model's are."""
    c = build_components(tiny_arch(kind), WORDS, seed=seed)
    c.defaults = dict(defaults or {})
    if half:
        for m in (c.unet, c.vae, *c.text_encoders()):
            m.half()
    save_components(c, Path(out), c.scheduler_config["_class_name"])
    return Path(out)


def make_tiny_upscaler(out: Path, seed: int = 0) -> Path:
    """A tiny random model of the Stable Diffusion x4 upscaler's architecture, written in diffusers'
    StableDiffusionUpscalePipeline format (7-channel UNet with noise-level class embeddings, a
    VAE that scales by 4, a DDPM low-res scheduler, max_noise_level)."""
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel


    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True, num_class_embeds=100)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        norm_num_groups=8, layers_per_block=1, sample_size=64, scaling_factor=0.08333)
    tokenizer = build_tokenizer(WORDS, 200, 77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
        hidden_act="gelu", vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    low_res = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000)
    pipe = StableDiffusionUpscalePipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                          unet=unet.eval(), low_res_scheduler=low_res, scheduler=scheduler,
                                          max_noise_level=350)
    pipe.save_pretrained(out, safe_serialization=True)
    as_umask_allows(out)
    return Path(out)


def tiny_sdxl_unet(refiner: bool = False) -> dict:
    """An SDXL-layout UNet: pooled text + size ids through `text_time`, linear projections, a
    deeper transformer in the last block, cross-attention over both encoders (32 + 32) or,
    for the refiner, the second one only (5 ids: size, crop, aesthetic score). The encoders differ
    in width (32, 40) as the real ones do (768, 1280): diffusers' single-file loader tells them apart so."""
    n_ids = 5 if refiner else 6
    return dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        transformer_layers_per_block=(1, 2), cross_attention_dim=40 if refiner else 72,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=n_ids * 8 + 32,
    )


def make_tiny_sdxl(out: Path, refiner: bool = False, seed: int = 0) -> Path:
    """Write a tiny seeded SDXL base (or refiner) in StableDiffusionXLPipeline's layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection


    arch = tiny_arch("sd1")
    torch.manual_seed(seed)
    vae = AutoencoderKL(**arch["vae"])  # first, so base and refiner share it as real SDXL pairs do
    tok, tok2 = build_tokenizer(WORDS, 200), build_tokenizer(WORDS, 200)
    tok2.pad_token = "!"  # OpenCLIP's tokenizer pads with "!", not with EOS
    te_args = dict(intermediate_size=37, num_attention_heads=4, num_hidden_layers=3, projection_dim=32,
                   vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                   eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed + (1 if refiner else 0))
    text_encoder = None if refiner else CLIPTextModel(CLIPTextConfig(**te_args, hidden_size=32, hidden_act="quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**te_args, hidden_size=40, hidden_act="gelu"))
    unet = UNet2DConditionModel(**tiny_sdxl_unet(refiner))
    scheduler = {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
                 "timestep_spacing": "leading", "prediction_type": "epsilon", "set_alpha_to_one": False,
                 "skip_prk_steps": True, "clip_sample": False}
    c = Components(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder, tokenizer=None if refiner else tok,
                   text_encoder_2=text_encoder_2.eval(), tokenizer_2=tok2, scheduler_config=scheduler, defaults={})
    save_components(c, Path(out), scheduler["_class_name"])
    return Path(out)
