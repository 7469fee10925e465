"""The Stable Diffusion x4 upscaler (diffusers' StableDiffusionUpscalePipeline): an SD 2-style
UNet whose input is the latents plus the low-res image (3 more channels), noised to a noise
level that is also its class label (Saharia et al. 2022, "noise conditioning augmentation")."""

from __future__ import annotations

import torch

from latentdiff.families.sd import WORDS, tiny_arch
from latentdiff.families.unet import UNetFamily
from latentdiff.prompts.tokenizer import build_tokenizer
from latentdiff.sampling.model_call import ImageChannels

MAX_NOISE_LEVEL = 350  # diffusers' StableDiffusionUpscalePipeline default


class Upscaler(UNetFamily):
    name, label = "upscaler", "SD x4 upscaler"
    variants = ("x4",)
    upscales = True

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return unet.get("in_channels") == vae.get("latent_channels", 4) + 3

    def model_index(self, components, index: dict) -> dict:
        """StableDiffusionUpscalePipeline's arguments: no image encoder, a watermarker slot."""
        if not components.upscaler:
            return index
        low = components.upscaler["low_res_scheduler"].get("_class_name", "DDPMScheduler")
        index = {k: v for k, v in index.items() if k not in ("image_encoder", "requires_safety_checker")}
        return {
            **index,
            "_class_name": "StableDiffusionUpscalePipeline",
            "watermarker": [None, None],
            "low_res_scheduler": ["diffusers", low],
            "max_noise_level": components.upscaler["max_noise_level"],
        }

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_parts(seed)


def upscaler_settings(components) -> dict:
    """The low-res scheduler config and max noise level that diffusers keeps beside the UNet (its
    defaults where the model lacks them), the level capped by the UNet's class embedding table."""
    settings = {
        "low_res_scheduler": {"_class_name": "DDPMScheduler"},
        "max_noise_level": MAX_NOISE_LEVEL,
        **components.upscaler,
    }
    classes = components.unet.config.num_class_embeds
    if classes:  # the class embedding table must hold the level too
        settings["max_noise_level"] = min(settings["max_noise_level"], int(classes) - 1)
    return settings


def low_res_channels(low_res_scheduler, low: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> ImageChannels:
    """The low-res image (B, 3, h, w) in [-1, 1] noised to `level` (B,) by the low-res scheduler,
    concatenated to the latents; the level is the class label."""
    return ImageChannels(low_res_scheduler.add_noise(low, noise, level), class_labels=level)


def tiny_parts(seed: int) -> dict:
    """A tiny random model of the x4 upscaler's architecture: a 7-channel UNet with noise-level
    class embeddings, a VAE that scales by 4, a DDPM low-res scheduler, max_noise_level."""
    # diffusers and transformers take seconds to import; only tests and benchmarks build tiny models.
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=7,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=8,
        use_linear_projection=True,
        num_class_embeds=100,
    )
    vae = AutoencoderKL(**{**tiny_arch("sd1")["vae"], "scaling_factor": 0.08333})  # SD's tiny VAE, the x4 scale
    tokenizer = build_tokenizer(WORDS, 200, 77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=32,
            hidden_act="gelu",
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
    low_res = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000)
    return dict(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(scheduler.config),
        upscaler={"low_res_scheduler": dict(low_res.config), "max_noise_level": MAX_NOISE_LEVEL},
    )
