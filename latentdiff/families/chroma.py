"""Chroma (Lodestone Rock 2025; a de-distilled, pruned Flux.1 schnell): Flux.1's transformer without
the CLIP pooled vector and the guidance embedding (ChromaTransformer2DModel: the modulations come
from a small approximator network of the timestep), conditioned on T5 alone, with the text tokens
masked after the prompt's first padding token, and ordinary classifier-free guidance with negative
prompts. Sampled and packed as Flux.1 (families/flux.py); computed as diffusers' ChromaPipeline.
"""

from __future__ import annotations

import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.flux import MAX_SEQUENCE_LENGTH, Flux, FluxCall, FluxConditioning, FluxContext
from latentdiff.families.flux_tiny import FLUX_VAE, SCHEDULERS, t5_tokenizer, tiny_t5, tiny_vae
from latentdiff.families.sd import WORDS


class ChromaConditioning(FluxConditioning):
    """Prompts -> FluxContext (no pooled vector; a text mask), as ChromaPipeline.encode_prompt: T5's
    last hidden states of the prompt padded (and cut) to 512 tokens, read with the tokenizer's mask,
    and the transformer's text mask: the prompt's tokens and the first padding token."""

    def __init__(self, components, max_sequence_length: int = MAX_SEQUENCE_LENGTH):
        self.t5, self.t5_tok = components.text_encoder, components.tokenizer
        self.max_sequence_length = max_sequence_length

    def embed(self, texts: list[str]) -> FluxContext:
        tokens = self._tokens(self.t5_tok, texts, self.max_sequence_length).to(self.t5.device)
        hidden = self.t5(tokens.input_ids, output_hidden_states=False, attention_mask=tokens.attention_mask)[0]
        kept = tokens.attention_mask.sum(dim=1, keepdim=True)
        mask = torch.arange(tokens.input_ids.shape[1], device=self.t5.device)[None] <= kept
        return FluxContext(hidden.to(self.t5.dtype), None, mask.to(self.t5.dtype))


class ChromaCall(FluxCall):
    """A ChromaTransformer2DModel as a Denoiser: Flux.1's call with the text mask (the image tokens all seen) in
    place of the pooled vector and the guidance."""

    def extra(self, ctx: FluxContext, b: int, image_tokens: int, device) -> dict:
        ones = torch.ones(b, image_tokens, device=device, dtype=ctx.mask.dtype)
        return {"attention_mask": torch.cat([ctx.mask, ones], dim=1)}


class Chroma(Flux):
    name, label = "chroma", "Chroma"
    variants = ("chroma",)

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return "approximator_num_channels" in unet  # ChromaTransformer2DModel's config alone has it

    def variant(self, components) -> str:
        return "chroma"

    def conditioning(self, components):
        return ChromaConditioning(components)

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """Ordinary CFG in the loop with the negative prompt (ChromaPipeline guides above 1)."""
        if true_cfg != 1.0:
            raise UsageError(f"true_cfg {true_cfg:g} does not apply to Chroma; it guides with guidance")
        return (guidance if guidance > 1.0 else 1.0), None

    def denoiser(self, components, guidance: float | None = None):
        return ChromaCall(components.unet)

    def defaults(self, components) -> dict:
        return {"steps": 35, "guidance": 5.0}  # ChromaPipeline's

    def inpainting(self, components) -> bool:
        return False

    def image_is_reference(self, components) -> bool:
        return False

    def lora_host(self, components, scheduler):
        return diffusers_pipeline("ChromaPipeline", components, scheduler)

    def model_index(self, components, index: dict) -> dict:
        keep = {k: index[k] for k in ("_diffusers_version",) if k in index}
        return {"_class_name": "ChromaPipeline", **keep, "feature_extractor": [None, None],
                "image_encoder": [None, None], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
                "transformer": ["diffusers", "ChromaTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}  # fmt: skip

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        """A one-block ChromaTransformer2DModel with a one-layer approximator, Flux's tiny VAE and T5."""
        from diffusers import ChromaTransformer2DModel

        tok = t5_tokenizer(WORDS)
        torch.manual_seed(seed)
        transformer = ChromaTransformer2DModel(
            in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
            approximator_hidden_dim=32, approximator_layers=1,
        )  # fmt: skip
        return dict(unet=transformer.eval(), vae=tiny_vae(FLUX_VAE), text_encoder=tiny_t5(tok), tokenizer=tok,
                    scheduler_config={"_class_name": "FlowMatchEulerDiscreteScheduler", **SCHEDULERS["flux-dev"]})  # fmt: skip
