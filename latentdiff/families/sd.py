"""Stable Diffusion 1.x and 2.x (Rombach et al. 2022), with their 9-channel inpainting UNets:
one CLIP text encoder (families/clip.py), a UNet2DConditionModel (families/unet.py)."""

from __future__ import annotations

import torch

from latentdiff.families.clip import clip_text_config
from latentdiff.families.released import family_configs
from latentdiff.families.unet import UNetFamily
from latentdiff.prompts.tokenizer import build_tokenizer

# Captions the tiny test models' tokenizers are trained on.
WORDS = [
    "a red apple",
    "a green pear on a table",
    "photo of a cat",
    "woman biking: dark skin tone",
    "flag: Chile",
    "an astronaut riding a horse",
    "blue sky with clouds",
    "smiling face with hearts",
]


class SD(UNetFamily):
    name, label = "sd", "SD 1.x/2.x"
    variants = ("sd1", "sd2", "sd1-inpaint")

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return True  # any other UNet2DConditionModel on CLIP text: listed last in the registry

    def variant(self, components) -> str:
        return "sd2" if components.text_encoder.config.hidden_act == "gelu" else "sd1"

    def released(self, variant: str, in_channels: int | None = None, prediction: str | None = None) -> dict:
        return family_configs(variant, in_channels or 4, prediction)

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_parts(tiny_arch(variant or "sd1"), seed)


def tiny_arch(kind: str = "sd1") -> dict:
    """A tiny architecture (the sections of models/build.py's YAML). kind: sd1, sd2, or
    sd1-inpaint (a 9-channel inpainting UNet: latents, mask, masked image)."""
    sd2 = kind == "sd2"
    return {
        "unet": dict(
            sample_size=16,
            in_channels=9 if kind.endswith("inpaint") else 4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            norm_num_groups=8,
            cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=(2, 4) if sd2 else 8,
            use_linear_projection=sd2,
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=8,
            layers_per_block=1,
            sample_size=64,
            scaling_factor=0.18215,
        ),
        "text_encoder": dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            hidden_act="gelu" if sd2 else "quick_gelu",
            projection_dim=32,
        ),
        "tokenizer": {"num_merges": 200, "max_length": 77},
        "scheduler": {
            "_class_name": "DDIMScheduler" if sd2 else "PNDMScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            "clip_sample": False,
            "skip_prk_steps": True,
            "prediction_type": "v_prediction" if sd2 else "epsilon",
        },
    }


def tiny_parts(arch: dict, seed: int) -> dict:
    """Seeded modules of `arch`, drawn in models/build.py's order (tokenizer, then UNet, VAE, text encoder)."""
    # diffusers and transformers take seconds to import; only tests and benchmarks build tiny models.
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = arch["tokenizer"]
    tokenizer = build_tokenizer(WORDS, tok["num_merges"], tok["max_length"])
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**arch["unet"])
    vae = AutoencoderKL(**arch["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**clip_text_config(arch["text_encoder"], tokenizer)))
    return dict(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=dict(arch["scheduler"]),
    )
