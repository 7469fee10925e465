"""SDXL (Podell et al. 2023), base and refiner: two text encoders (CLIP ViT-L and OpenCLIP
ViT-bigG) whose penultimate hidden states are concatenated feature-wise, the second one's pooled
projection, and the size/crop micro-conditioning (`time_ids`), all into a `text_time` UNet. The
refiner has only the second encoder and an aesthetic score where the base has the target size."""

from __future__ import annotations

import torch

from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.clip import Conditioning, Embeddings
from latentdiff.families.released import family_configs
from latentdiff.families.sd import WORDS, tiny_arch
from latentdiff.families.unet import UNetFamily
from latentdiff.prompts.tokenizer import build_tokenizer

# diffusers' StableDiffusionXLImg2ImgPipeline defaults for the refiner's aesthetic conditioning.
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5
TEXT_PARTS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))


class SDXLConditioning(Conditioning):
    """SDXL base (two encoders) or refiner (the second only): penultimate hidden states,
    pooled embeddings of the last encoder, size/crop (or aesthetic) ids."""

    def _hidden(self, encoder, out, clip_skip: int) -> torch.Tensor:
        # The penultimate layer, not normed; clip skip N goes N - 1 layers further back, as
        # diffusers' `clip_skip=N-1` does for SDXL.
        return out.hidden_states[-(clip_skip + 1)]

    def unused_modules(self) -> list:
        # The last layer and final norm of every encoder but the pooled one feed nothing.
        models = [getattr(te, "text_model", te) for _, te in self.pairs[:-1]]
        return [m for model in models for m in (model.encoder.layers[-1], model.final_layer_norm)]

    def _finish(self, hidden: torch.Tensor, pooled) -> Embeddings:
        return Embeddings(hidden, {"text_embeds": pooled})

    def with_size(self, emb: Embeddings, height: int, width: int, negative: bool = False) -> Embeddings:
        # original size, crop top-left, then target size (base) or aesthetic score (refiner)
        if self.index.get("requires_aesthetics_score", False):
            tail = [NEGATIVE_AESTHETIC_SCORE if negative else AESTHETIC_SCORE]
        else:
            tail = [height, width]
        return self.with_size_ids(emb, torch.tensor([[height, width, 0, 0, *tail]]).repeat(len(emb.hidden), 1))

    def with_size_ids(self, emb: Embeddings, ids: torch.Tensor) -> Embeddings:
        ids = ids.to(device=emb.hidden.device, dtype=emb.hidden.dtype)
        return Embeddings(emb.hidden, {**emb.added, "time_ids": ids})

    def __call__(self, prompts, negatives, height, width, syntax="plain", clip_skip=1):
        if negatives is not None and self.index.get("force_zeros_for_empty_prompt", True) and not any(negatives):
            # No negative prompt: SDXL was trained to take zeros as the unconditional input.
            cond, _ = super().__call__(prompts, None, height, width, syntax, clip_skip)
            zeros = Embeddings(
                torch.zeros_like(cond.hidden), {"text_embeds": torch.zeros_like(cond.added["text_embeds"])}
            )
            return cond, self.with_size(zeros, height, width, negative=True)
        return super().__call__(prompts, negatives, height, width, syntax, clip_skip)


class SDXL(UNetFamily):
    name, label = "sdxl", "SDXL"
    variants = ("sdxl", "sdxl_refiner")
    conditioning_class = SDXLConditioning

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return unet.get("addition_embed_type") == "text_time"  # pooled text embeddings and size ids

    def variant(self, components) -> str:
        return "sdxl" if components.text_encoder is not None else "sdxl_refiner"

    def released(self, variant: str, in_channels: int | None = None, prediction: str | None = None) -> dict:
        return family_configs(variant, in_channels or 4, prediction)

    def lora_host(self, components, scheduler):
        """SDXL's loader also maps kohya's `lora_te1_`/`lora_te2_` and SGM block names (`input_blocks_4_1_...`)."""
        return diffusers_pipeline("StableDiffusionXLPipeline", components, scheduler, add_watermarker=False)

    def model_index(self, components, index: dict) -> dict:
        """StableDiffusionXLPipeline's (the refiner: its Img2Img pipeline's) arguments."""
        index = {k: v for k, v in index.items() if k not in ("safety_checker", "requires_safety_checker")}
        refiner = components.text_encoder is None
        index["_class_name"] = "StableDiffusionXLImg2ImgPipeline" if refiner else "StableDiffusionXLPipeline"
        for te_name, tok_name in TEXT_PARTS:
            te = getattr(components, te_name)
            index[te_name] = ["transformers", type(te).__name__] if te is not None else [None, None]
            index[tok_name] = ["transformers", "CLIPTokenizer"] if te is not None else [None, None]
        # The base pipeline takes no `requires_aesthetics_score` (diffusers warns about it).
        options = {
            "force_zeros_for_empty_prompt": not refiner,
            **({"requires_aesthetics_score": True} if refiner else {}),
        }
        return {**index, **options, **components.index}

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_parts((variant or "sdxl") == "sdxl_refiner", seed)


def tiny_unet(refiner: bool = False) -> dict:
    """An SDXL-layout UNet: pooled text + size ids through `text_time`, linear projections, a
    deeper transformer in the last block, cross-attention over both encoders (32 + 32) or,
    for the refiner, the second one only (5 ids: size, crop, aesthetic score). The encoders differ
    in width (32, 40) as the real ones do (768, 1280): diffusers' single-file loader tells them apart so."""
    n_ids = 5 if refiner else 6
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=40 if refiner else 72,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=n_ids * 8 + 32,
    )


def tiny_parts(refiner: bool, seed: int) -> dict:
    """A tiny seeded SDXL base (or refiner): the VAE first, so base and refiner share it as real pairs do."""
    # diffusers and transformers take seconds to import; only tests and benchmarks build tiny models.
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_arch("sd1")["vae"])
    tok, tok2 = build_tokenizer(WORDS, 200), build_tokenizer(WORDS, 200)
    tok2.pad_token = "!"  # OpenCLIP's tokenizer pads with "!", not with EOS
    te_args = dict(
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        projection_dim=32,
        vocab_size=len(tok),
        max_position_embeddings=77,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed + (1 if refiner else 0))
    text_encoder = (
        None if refiner else CLIPTextModel(CLIPTextConfig(**te_args, hidden_size=32, hidden_act="quick_gelu"))
    )
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**te_args, hidden_size=40, hidden_act="gelu"))
    unet = UNet2DConditionModel(**tiny_unet(refiner))
    scheduler = {
        "_class_name": "EulerDiscreteScheduler",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "clip_sample": False,
    }
    return dict(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=None if refiner else tok,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tok2,
        scheduler_config=scheduler,
    )
