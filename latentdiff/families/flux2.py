"""FLUX.2 klein (Black Forest Labs 2026; 4B and 9B, base and step-distilled): a rectified-flow
transformer (Flux2Transformer2DModel: joint text-image attention with 4-axis rotary position ids
(time, row, column, layer), no pooled text vector) over the 2x2-patched latents of its own VAE
(AutoencoderKLFlux2, normalised by the VAE's batch-norm statistics), conditioned on the hidden
states of three layers of a Qwen3 language model reading the prompt as a chat turn. The base
models guide with ordinary CFG (an empty negative prompt, as Flux2KleinPipeline's); the distilled
ones take none. Sampled with FlowMatchEulerDiscreteScheduler, shifted by FLUX.2's empirical mu of
the token count and the step count. Computed as diffusers' Flux2KleinPipeline computes it.

The loop sees the patched, normalised latents as ordinary (B, 4C, h, w) latents through the VAE
view of flux2_vae.py; the model call flattens them into tokens and back (`Flux2Call`).
FLUX.2 dev (a Mistral-3 text encoder, a distilled guidance embedding) is not supported yet: its
folder is refused at load, naming its text encoder's class.
"""

from __future__ import annotations

import torch

from latentdiff.errors import ModelError, UsageError
from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.flux import DEFAULT_SAMPLE_SIZE, MAX_SEQUENCE_LENGTH, Flux, FluxConditioning, FluxContext
from latentdiff.families.flux2_tiny import flux2_index, tiny_flux2
from latentdiff.families.flux2_vae import PatchedLatents
from latentdiff.runtime.offload import execution_device
from latentdiff.sampling.model_call import Inputs

HIDDEN_LAYERS = (9, 18, 27)  # the Qwen3 layers whose states Flux2KleinPipeline stacks


def empirical_mu(tokens: int, steps: int) -> float:
    """FLUX.2's schedule shift (diffusers' compute_empirical_mu): linear in the token count, fitted
    at 10 and 200 steps and interpolated in the step count below 4300 tokens."""
    a1, b1, a2, b2 = 8.73809524e-05, 1.89833333, 0.00016927, 0.45666666
    at_200 = a2 * tokens + b2
    if tokens > 4300:
        return float(at_200)
    at_10 = a1 * tokens + b1
    slope = (at_200 - at_10) / 190.0
    return float(slope * steps + (at_200 - 200.0 * slope))


class Flux2Conditioning(FluxConditioning):
    """Prompts -> FluxContext (no pooled vector), as Flux2KleinPipeline.encode_prompt: each prompt
    as a user turn of the tokenizer's chat template (thinking off), padded (and cut) to
    `max_sequence_length` tokens, and the hidden states of Qwen3's layers 9, 18 and 27 side by side."""

    def __init__(self, components, max_sequence_length: int = MAX_SEQUENCE_LENGTH):
        self.encoder, self.tokenizer = components.text_encoder, components.tokenizer
        self.max_sequence_length = max_sequence_length
        self.chats([""])  # a missing or broken chat template is refused at load, in one line

    def chats(self, texts: list[str]) -> list[str]:
        """Each text as one user turn of the tokenizer's chat template, thinking off (as Flux2KleinPipeline)."""
        turn = dict(tokenize=False, add_generation_prompt=True, enable_thinking=False)
        try:
            return [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], **turn) for t in texts]
        except Exception as e:  # noqa: BLE001 - jinja2's template errors, transformers' ValueError without one
            what = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(f"the FLUX.2 tokenizer's chat template cannot be applied: {what}") from None

    def check_clip_skip(self, clip_skip) -> int:
        if clip_skip not in (1, None):
            raise UsageError(f"clip_skip does not apply to FLUX.2 (its text comes from Qwen3), got {clip_skip!r}")
        return 1

    def embed(self, texts: list[str]) -> FluxContext:
        tokens = self._tokens(self.tokenizer, self.chats(texts), self.max_sequence_length).to(
            execution_device(self.encoder)
        )
        out = self.encoder(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True, use_cache=False
        )
        hidden = torch.stack([out.hidden_states[k] for k in HIDDEN_LAYERS], dim=2)  # (B, T, 3, D)
        return FluxContext(hidden.flatten(2).to(self.encoder.dtype), None)


def position_ids(t: int, h: int, w: int, length: int, batch: int, device) -> torch.Tensor:
    """(batch, t*h*w*length, 4) ids (time, row, column, layer) of a grid in raster order (as
    Flux2Pipeline's _prepare_latent_ids and _prepare_text_ids build them)."""
    axes = [torch.arange(n) for n in (t, h, w, length)]
    return torch.cartesian_prod(*axes).to(device).expand(batch, -1, -1)


class Flux2Call:
    """A Flux2Transformer2DModel as a Denoiser: (B, C, h, w) patched latents as h*w tokens with
    their ids, the timestep divided by 1000, the prediction back as (B, C, h, w)."""

    def __init__(self, transformer, guidance: float | None = None):
        self.transformer = transformer
        self.dtype = transformer.dtype
        self.guidance = guidance if transformer.config.guidance_embeds else None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        if inputs.channels is not None or inputs.residuals or inputs.tokens:
            raise UsageError("FLUX.2 takes no ControlNet, adapter or inpainting channels yet")
        b, c, h, w = x.shape
        hidden = inputs.context.hidden
        guidance = None if self.guidance is None else torch.full((b,), self.guidance, device=x.device)
        out = self.transformer(
            hidden_states=x.reshape(b, c, h * w).transpose(1, 2),
            timestep=t.expand(b).to(x.dtype) / 1000,
            guidance=guidance,
            encoder_hidden_states=hidden,
            txt_ids=position_ids(1, 1, 1, hidden.shape[1], b, x.device),
            img_ids=position_ids(1, h, w, 1, b, x.device),
            return_dict=False,
        )[0]
        return out.transpose(1, 2).reshape(b, c, h, w)


class Flux2(Flux):
    name, label = "flux2", "FLUX.2"
    variants = ("flux2-klein",)
    # diffusers' train_dreambooth_lora_flux2_klein.py's default layers: both streams' attention, the single blocks'
    # fused input and (by index: `to_out` alone would name the double blocks' output list) their output.
    lora_targets = ("to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj")

    def lora_layers(self, components) -> list[str]:
        singles = components.unet.config.num_single_layers
        return [*self.lora_targets, *(f"single_transformer_blocks.{i}.attn.to_out" for i in range(singles))]

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        # Flux2Transformer2DModel's config: 4 rotary axes and one timestep-and-guidance width (Flux.1 has 3 and none).
        return "timestep_guidance_channels" in unet and len(unet.get("axes_dims_rope") or ()) == 4

    def variant(self, components) -> str:
        return "flux2-klein"

    def adapt(self, components):
        if not isinstance(components.vae, PatchedLatents):
            components.vae = PatchedLatents(components.vae)
        return components

    def conditioning(self, components):
        return Flux2Conditioning(components)

    def distilled(self, components) -> bool:
        return bool(components.index.get("is_distilled"))

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """klein base: ordinary CFG in the loop (diffusers guides only above 1); distilled: none (diffusers ignores it)."""
        if true_cfg != 1.0:
            raise UsageError(f"true_cfg {true_cfg:g} does not apply to FLUX.2 klein; it guides with guidance")
        return (1.0 if self.distilled(components) or guidance <= 1.0 else guidance), None

    def denoiser(self, components, guidance: float | None = None):
        return Flux2Call(components.unet, guidance)

    def shift(self, tokens: int, steps: int, config) -> float:
        return empirical_mu(tokens, steps)

    def defaults(self, components) -> dict:
        """Flux2KleinPipeline's (50 steps at 4.0); the distilled models' cards: 4 steps, no guidance."""
        return {"steps": 4, "guidance": 1.0} if self.distilled(components) else {"steps": 50, "guidance": 4.0}

    def size_step(self, components, factor: int) -> int:
        return factor  # the VAE view's factor already counts the 2x2 patch

    def native_size(self, components, factor: int) -> int:
        return DEFAULT_SAMPLE_SIZE * factor // 2

    def lora_host(self, components, scheduler):
        """Flux2KleinPipeline's loader reads diffusers/peft files of its transformer."""
        vae = components.vae.vae if isinstance(components.vae, PatchedLatents) else components.vae
        return diffusers_pipeline("Flux2KleinPipeline", components, scheduler, vae=vae)

    def model_index(self, components, index: dict) -> dict:
        return flux2_index({**index, **components.index})

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_flux2(variant or self.variants[0], seed)
