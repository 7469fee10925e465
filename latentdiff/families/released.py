"""The configs of the released Stable Diffusion architectures, shipped so a single-file checkpoint
loads offline (diffusers' `from_single_file` would fetch them from the hub).

Values are those of the hub repos diffusers maps each family to (`DIFFUSERS_DEFAULT_PIPELINE_PATHS`):
stable-diffusion-v1-5, stable-diffusion-2-1 (v) / 2-1-base (epsilon), stable-diffusion-xl-base-1.0,
-refiner-1.0, and their inpainting variants (9 UNet input channels). One CLIP BPE vocabulary serves
every tokenizer (OpenAI CLIP and OpenCLIP share it; they differ in the padding token). Its files
(configs/clip_tokenizer/) were written from CLIP's `bpe_simple_vocab_16e6` merges (as shipped in
open_clip_torch) in the layout of the hub's CLIPTokenizer files: 49408 tokens, "a photo of a cat"
-> [49406, 320, 1125, 539, 320, 2368, 49407] as SD's tokenizer gives.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_DIR = Path(__file__).parent / "configs" / "clip_tokenizer"
FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")

_SCALED = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
    skip_prk_steps=True,
)
_CROSS, _PLAIN = "CrossAttnDownBlock2D", "DownBlock2D"
_UP_CROSS, _UP_PLAIN = "CrossAttnUpBlock2D", "UpBlock2D"


def _clip(hidden: int, layers: int, heads: int, act: str, projection: int) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        hidden_act=act,
        projection_dim=projection,
        max_position_embeddings=77,
        vocab_size=49408,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )


CLIP_L = _clip(768, 12, 12, "quick_gelu", 768)
OPENCLIP_H = _clip(1024, 23, 16, "gelu", 512)  # SD 2 drops the last of OpenCLIP ViT-H's 24 layers
OPENCLIP_BIGG = _clip(1280, 32, 20, "gelu", 1280)


def _vae(size: int, scaling: float) -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        norm_num_groups=32,
        act_fn="silu",
        sample_size=size,
        scaling_factor=scaling,
        force_upcast=True,
    )


def _sd_unet(sample: int, heads, cross: int, linear: bool) -> dict:
    return dict(
        sample_size=sample,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=[320, 640, 1280, 1280],
        down_block_types=[_CROSS] * 3 + [_PLAIN],
        up_block_types=[_UP_PLAIN] + [_UP_CROSS] * 3,
        attention_head_dim=heads,
        cross_attention_dim=cross,
        use_linear_projection=linear,
        norm_num_groups=32,
    )


def _xl_unet(refiner: bool) -> dict:
    if refiner:
        blocks = dict(
            block_out_channels=[384, 768, 1536, 1536],
            down_block_types=[_PLAIN, _CROSS, _CROSS, _PLAIN],
            up_block_types=[_UP_PLAIN, _UP_CROSS, _UP_CROSS, _UP_PLAIN],
            attention_head_dim=[6, 12, 24, 24],
            transformer_layers_per_block=4,
            cross_attention_dim=1280,
            projection_class_embeddings_input_dim=2560,
        )
    else:
        blocks = dict(
            block_out_channels=[320, 640, 1280],
            down_block_types=[_PLAIN, _CROSS, _CROSS],
            up_block_types=[_UP_CROSS, _UP_CROSS, _UP_PLAIN],
            attention_head_dim=[5, 10, 20],
            transformer_layers_per_block=[1, 2, 10],
            cross_attention_dim=2048,
            projection_class_embeddings_input_dim=2816,
        )
    return dict(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        norm_num_groups=32,
        **blocks,
    )


def family_configs(family: str, in_channels: int = 4, prediction: str | None = None) -> dict:
    """Component configs (unet, vae, text_encoder[_2], scheduler) and model_index options of a
    family; `in_channels` 9 for inpainting; `prediction` "epsilon"/"v_prediction" for SD 2."""
    if family == "sd1":
        out = dict(
            unet=_sd_unet(64, 8, 768, False),
            vae=_vae(512, 0.18215),
            text_encoder=CLIP_L,
            scheduler=dict(_class_name="PNDMScheduler", prediction_type="epsilon", **_SCALED),
        )
    elif family == "sd2":
        v = (prediction or ("epsilon" if in_channels == 9 else "v_prediction")) == "v_prediction"
        out = dict(
            unet=_sd_unet(96 if v else 64, [5, 10, 20, 20], 1024, True),
            vae=_vae(768 if v else 512, 0.18215),
            text_encoder=OPENCLIP_H,
            scheduler=dict(
                _class_name="DDIMScheduler" if v else "PNDMScheduler",
                prediction_type="v_prediction" if v else "epsilon",
                **_SCALED,
            ),
        )
    else:
        refiner = family == "sdxl_refiner"
        out = dict(
            unet=_xl_unet(refiner),
            vae=_vae(1024, 0.13025),
            text_encoder_2=OPENCLIP_BIGG,
            scheduler=dict(
                _class_name="EulerDiscreteScheduler",
                prediction_type="epsilon",
                timestep_spacing="leading",
                interpolation_type="linear",
                **_SCALED,
            ),
            index=dict(
                force_zeros_for_empty_prompt=not refiner, **({"requires_aesthetics_score": True} if refiner else {})
            ),
        )
        if not refiner:
            out["text_encoder"] = CLIP_L
    out["unet"] = {**out["unet"], "in_channels": in_channels}
    return out


def clip_tokenizer(open_clip: bool):
    """The CLIP BPE tokenizer, padded as OpenAI CLIP (end-of-text) or OpenCLIP ("!") pads."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"),
        str(TOKENIZER_DIR / "merges.txt"),
        pad_token="!" if open_clip else "<|endoftext|>",
    )
    tok.model_max_length = 77
    return tok
