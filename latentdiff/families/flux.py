"""Flux.1 (Black Forest Labs 2024; dev and schnell): a rectified-flow transformer
(FluxTransformer2DModel, joint text-image attention over 2x2-packed latent tokens with 3-axis rotary
position ids), conditioned on CLIP-L's pooled text vector and T5's token sequence, sampled with
FlowMatchEulerDiscreteScheduler and its resolution-dependent shift. dev embeds a distilled guidance
scale; schnell has no guidance input. Computed as diffusers' FluxPipeline computes it.

The loop is the one every family uses: the latents stay (B, 16, h, w) there; the model call packs
them into tokens and back (`FluxCall`), so schedulers, starts and decoding see ordinary latents.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.flow import CaptionCache, PackedFlowMatching
from latentdiff.families.flux_tiny import flux_index, tiny_flux
from latentdiff.runtime.device import notice
from latentdiff.runtime.offload import execution_device
from latentdiff.sampling.model_call import Inputs

# diffusers' FluxPipeline's default T5 length.
MAX_SEQUENCE_LENGTH = 512
DEFAULT_SAMPLE_SIZE = PackedFlowMatching.DEFAULT_SAMPLE_SIZE
KONTEXT = "FluxKontextPipeline"
# diffusers' train_dreambooth_lora_flux.py's default LoRA layers: both block kinds' attention, the double blocks' MLPs.
LORA_TARGETS = (
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)


@dataclass
class FluxContext:
    """A batch's conditioning: T5's hidden states (the text tokens the image attends with) and
    CLIP-L's pooled vector (added to the timestep embedding; None for FLUX.2, which has none)."""

    hidden: torch.Tensor  # (B, T, D_t5)
    pooled: torch.Tensor | None  # (B, D_clip)
    mask: torch.Tensor | None = None  # (B, T): the text tokens attended to (Chroma's); None: all

    def _parts(self, other: "FluxContext | None" = None, op=None) -> "FluxContext":
        def one(name):
            mine = getattr(self, name)
            return None if mine is None else op(mine, None if other is None else getattr(other, name))

        return FluxContext(one("hidden"), one("pooled"), one("mask"))

    def cat(self, other: "FluxContext") -> "FluxContext":
        return self._parts(other, lambda a, b: torch.cat([a, b]))

    def to(self, dtype=None, device=None) -> "FluxContext":
        return self._parts(None, lambda a, _: a.to(device=device, dtype=dtype))

    def __getitem__(self, rows: slice) -> "FluxContext":
        return self._parts(None, lambda a, _: a[rows])


class FluxConditioning(CaptionCache):
    """Prompts -> FluxContext, as FluxPipeline.encode_prompt: CLIP-L's pooler output of the prompt
    cut to its tokenizer's window, T5's last hidden states of the prompt padded (and cut) to
    `max_sequence_length` tokens. Prompt text is taken as it is (no A1111 emphasis: Flux's encoders
    were not trained with it, and diffusers does not apply it)."""

    def __init__(self, components, max_sequence_length: int = MAX_SEQUENCE_LENGTH):
        self.clip, self.clip_tok = components.text_encoder, components.tokenizer
        self.t5, self.t5_tok = components.text_encoder_2, components.tokenizer_2
        self.max_sequence_length = max_sequence_length

    def check_clip_skip(self, clip_skip) -> int:
        if clip_skip not in (1, None):
            raise UsageError(f"clip_skip does not apply to Flux (its text comes from T5), got {clip_skip!r}")
        return 1

    def _ids(self, tokenizer, texts: list[str], length: int, device) -> torch.Tensor:
        return self._tokens(tokenizer, texts, length).input_ids.to(device)

    @staticmethod
    def _tokens(tokenizer, texts: list[str], length: int):
        """`texts` as `length` tokens each (ids, attention mask), cut where longer (as diffusers cuts them), saying so once."""
        if any(len(ids) > length for ids in tokenizer(texts).input_ids):
            notice(
                f"a prompt is longer than the {length} tokens {type(tokenizer).__name__} reads here; the rest is cut"
            )
        return tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")

    def embed(self, texts: list[str]) -> FluxContext:
        clip_device, t5_device = execution_device(self.clip), execution_device(self.t5)
        window = self.clip_tok.model_max_length
        pooled = self.clip(self._ids(self.clip_tok, texts, window, clip_device), output_hidden_states=False)
        hidden = self.t5(self._ids(self.t5_tok, texts, self.max_sequence_length, t5_device), output_hidden_states=False)
        return FluxContext(hidden[0].to(self.t5.dtype), pooled.pooler_output.to(self.clip.dtype))

    @torch.no_grad()
    def __call__(self, prompts, negatives, height: int, width: int, syntax: str = "plain", clip_skip: int = 1):
        """(cond, uncond): the prompts' context and (given negatives: true CFG) the negatives'."""
        self.check_clip_skip(clip_skip)
        context = self.embed(list(prompts) + list(negatives or []))
        n = len(prompts)
        return context[:n], (context[n:] if negatives else None)

    def unused_modules(self) -> list:
        return []


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, h/2 * w/2, 4C) tokens of 2x2 patches (FluxPipeline._pack_latents)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack` for latents of h x w."""
    b, _, d = tokens.shape
    x = tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h*w, 3) position ids of the packed tokens: (0, row, column)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3).to(device=device, dtype=dtype)


class FluxCall:
    """A FluxTransformer2DModel as a Denoiser: (B, C, h, w) latents packed into tokens with their
    ids, the timestep divided by 1000 (the transformer scales it back), the distilled `guidance`
    (dev) embedded, the prediction unpacked to (B, C, h, w)."""

    def __init__(self, transformer, guidance: float | None = None):
        self.transformer = transformer
        self.dtype = transformer.dtype
        self.guidance = guidance if transformer.config.get("guidance_embeds") else None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        if inputs.residuals or inputs.tokens:
            raise UsageError("Flux takes no ControlNet or adapter yet")
        b, _, h, w = x.shape
        ctx = inputs.context
        tokens, ids = self.tokens(x, inputs.channels)
        out = self.transformer(
            hidden_states=tokens,
            timestep=t.expand(b).to(x.dtype) / 1000,
            encoder_hidden_states=ctx.hidden,
            txt_ids=torch.zeros(ctx.hidden.shape[1], 3, device=x.device, dtype=x.dtype),
            img_ids=ids,
            return_dict=False,
            **self.extra(ctx, b, tokens.shape[1], x.device),
        )[0]
        return unpack(out[:, : h * w // 4], h, w)  # Kontext: the reference's tokens dropped

    def extra(self, ctx: FluxContext, b: int, image_tokens: int, device) -> dict:
        """The call's family-own arguments: CLIP's pooled vector and (dev) the embedded guidance."""
        guidance = None if self.guidance is None else torch.full((b,), self.guidance, device=device)
        return {"guidance": guidance, "pooled_projections": ctx.pooled}

    def tokens(self, x: torch.Tensor, channels) -> tuple[torch.Tensor, torch.Tensor]:
        """The image tokens and their ids: Fill's masked image and mask packed beside the latents
        (pack keeps channel order: FluxFillPipeline's concatenation of packed tokens); Kontext's
        reference latents as more tokens after them, at time index 1 (FluxKontextPipeline)."""
        h, w = x.shape[-2:]
        ids = image_ids(h // 2, w // 2, x.device, x.dtype)
        if channels is None:
            return pack(x), ids
        extra = channels.concat.to(x.dtype)
        if self.transformer.config.in_channels > x.shape[1] * 4:  # Fill
            return pack(torch.cat([x, extra], dim=1)), ids
        ref_ids = image_ids(extra.shape[-2] // 2, extra.shape[-1] // 2, x.device, x.dtype)
        ref_ids[:, 0] = 1
        return torch.cat([pack(x), pack(extra)], dim=1), torch.cat([ids, ref_ids])


class Flux(PackedFlowMatching):
    name, label = "flux", "Flux.1"
    variants = ("flux-dev", "flux-schnell", "flux-fill", "flux-kontext")
    fp16, bf16_first = "warn", True  # diffusers clamps its fp16 activations; ComfyUI lists bf16 first

    def dtype_rule(self, unet: dict):
        """Fill is refused in fp16 (ComfyUI's FluxInpaint supports bf16 and fp32 only)."""
        rule = super().dtype_rule(unet)
        fill = (unet.get("out_channels") or unet.get("in_channels", 0)) < unet.get("in_channels", 0)
        return dataclasses.replace(rule, fp16="refuse") if fill else rule

    lora_targets = LORA_TARGETS

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        # FluxTransformer2DModel's config: rotary axes and a pooled text projection (no UNet has them).
        return "axes_dims_rope" in unet and "pooled_projection_dim" in unet

    def variant(self, components) -> str:
        if self.inpainting(components):
            return "flux-fill"
        if self.image_is_reference(components):
            return "flux-kontext"
        return "flux-dev" if components.unet.config.guidance_embeds else "flux-schnell"

    def inpainting(self, components) -> bool:
        """Flux Fill: the masked image's latents and the mask come in beside the latents (more input than output features)."""
        config = components.unet.config
        return (config.get("out_channels") or config.in_channels) < config.in_channels

    def mask_channels(self, components, mask, masked):
        """FluxFillPipeline's: the masked image's latents, then the full-resolution mask with each
        latent pixel's f x f mask pixels as f*f channels."""
        b, _, h, w = masked.shape
        f = mask.shape[-1] // w
        m = mask[:, 0].view(1, h, f, w, f).permute(0, 2, 4, 1, 3).reshape(1, f * f, h, w)
        return torch.cat([masked, m.expand(b, -1, -1, -1).to(masked.dtype)], dim=1)

    def encodes_full_start(self, components) -> bool:
        return True  # FluxFillPipeline encodes the init image even at strength 1

    def image_is_reference(self, components) -> bool:
        """Kontext: a dev transformer whose folder says FluxKontextPipeline (its weights alone do not tell)."""
        return components.index.get("_class_name") == KONTEXT

    def conditioning(self, components):
        return FluxConditioning(components)

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """dev: `guidance` is embedded (no CFG batch); schnell ignores it. True CFG (a negative prompt
        run beside the prompt, diffusers' true_cfg_scale) only where asked."""
        return true_cfg, (guidance if components.unet.config.guidance_embeds else None)

    def denoiser(self, components, guidance: float | None = None):
        return FluxCall(components.unet, guidance)

    def defaults(self, components) -> dict:
        """FluxPipeline's defaults (28 steps, guidance 3.5); schnell is distilled for 4 steps, without guidance (diffusers' example: 0)."""
        if self.inpainting(components):
            return {"steps": 50, "guidance": 30.0}  # FluxFillPipeline's
        return (
            {"steps": 28, "guidance": 3.5} if components.unet.config.guidance_embeds else {"steps": 4, "guidance": 0.0}
        )

    def lora_host(self, components, scheduler):
        """FluxPipeline's loader reads diffusers/peft files and converts kohya's, XLabs', Black Forest
        Labs' and the other trainers' Flux layouts that diffusers knows."""
        return diffusers_pipeline("FluxPipeline", components, scheduler)

    def model_index(self, components, index: dict) -> dict:
        if self.inpainting(components):
            return flux_index(index, "FluxFillPipeline")
        return flux_index(index, KONTEXT if self.image_is_reference(components) else "FluxPipeline")

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_flux(variant or "flux-dev", seed)
