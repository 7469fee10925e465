"""Qwen-Image (Alibaba Qwen 2025): a 20B MMDiT (QwenImageTransformer2DModel: joint text-image
attention over 2x2-packed latent tokens with a text-aware 3-axis RoPE) conditioned on the last
hidden states of Qwen2.5-VL for the prompt in a chat frame (the frame's first 34 tokens dropped,
padding masked), a one-frame 3D causal VAE with per-channel latent statistics (families/
frame_vae.py), FlowMatchEulerDiscreteScheduler with an exponential dynamic shift, and true
classifier-free guidance whose result is rescaled to the conditional prediction's norm per token.
Computed as diffusers' QwenImagePipeline computes it.

The loop sees ordinary (B, C, h, w) latents; the model call packs them (families/flux.py's pack)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.flow import ATTENTION_TARGETS, CaptionCache, PackedFlowMatching
from latentdiff.families.flux import pack, unpack
from latentdiff.families.frame_vae import FrameVAE
from latentdiff.families.qwen_tiny import qwen_image_index, tiny_qwen_image
from latentdiff.runtime.offload import execution_device
from latentdiff.sampling.model_call import Inputs

# QwenImagePipeline's chat frame, how many of its tokens it drops and its default prompt length.
FRAME = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
DROP = 34
MAX_SEQUENCE_LENGTH = 512
TOKENIZER_MAX_LENGTH = 1024


def pad_rows(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, ...) zero-padded to (B, length, ...)."""
    pad = x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], dim=1)


@dataclass
class MaskedContext:
    """A batch's text tokens of different lengths: hidden states padded with zeros to the longest,
    and the mask of the real ones (the transformer attends to those only)."""

    hidden: torch.Tensor  # (B, T, D)
    mask: torch.Tensor  # (B, T) of 0/1

    def cat(self, other: "MaskedContext") -> "MaskedContext":
        n = max(self.hidden.shape[1], other.hidden.shape[1])
        return MaskedContext(
            torch.cat([pad_rows(self.hidden, n), pad_rows(other.hidden, n)]),
            torch.cat([pad_rows(self.mask, n), pad_rows(other.mask, n)]),
        )

    def to(self, dtype=None, device=None) -> "MaskedContext":
        return MaskedContext(self.hidden.to(device=device, dtype=dtype), self.mask.to(device=device))

    def __getitem__(self, rows: slice) -> "MaskedContext":
        return MaskedContext(self.hidden[rows], self.mask[rows])


class ChatConditioning(CaptionCache):
    """Prompts -> MaskedContext: each prompt in a chat `frame`, the text model's hidden states
    (`layer` from the end) of its tokens, the frame's first `drop` tokens dropped, padding cut."""

    frame, drop, layer, family = FRAME, DROP, 1, "Qwen-Image"

    def __init__(self, components, max_sequence_length: int = MAX_SEQUENCE_LENGTH):
        self.encoder, self.tokenizer = components.text_encoder, components.tokenizer
        self.max_sequence_length = max_sequence_length

    def check_clip_skip(self, clip_skip) -> int:
        if clip_skip not in (1, None):
            raise UsageError(f"clip_skip does not apply to {self.family} (its text comes from Qwen), got {clip_skip!r}")
        return 1

    def tokens(self, texts: list[str]):
        framed = [self.frame.format(t) for t in texts]
        return self.tokenizer(
            framed, max_length=TOKENIZER_MAX_LENGTH + self.drop, padding=True, truncation=True, return_tensors="pt"
        )

    def embed(self, texts: list[str]) -> MaskedContext:
        tok = self.tokens(texts)
        device = execution_device(self.encoder)
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        hidden = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-self.layer]
        rows = [h[m.bool()][self.drop :][: self.max_sequence_length] for h, m in zip(hidden, mask)]
        n = max(len(r) for r in rows)
        stacked = torch.stack([pad_rows(r[None], n)[0] for r in rows]).to(self.encoder.dtype)
        masks = torch.stack([pad_rows(torch.ones(1, len(r), dtype=torch.long), n)[0] for r in rows])
        return MaskedContext(stacked, masks.to(stacked.device))

    @torch.no_grad()
    def __call__(self, prompts, negatives, height: int, width: int, syntax: str = "plain", clip_skip: int = 1):
        """(cond, uncond), each prompt encoded on its own length as diffusers does (padding masked)."""
        self.check_clip_skip(clip_skip)
        cond = self.embed(list(prompts))
        return cond, (self.embed(list(negatives)) if negatives else None)

    def unused_modules(self) -> list:
        return []


class QwenCall:
    """A QwenImageTransformer2DModel as a Denoiser: latents packed with their (frames, rows,
    columns) shape, the timestep divided by 1000, the text mask; `rescale` is Qwen-Image's
    correction of the loop's guided prediction."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.dtype = transformer.dtype

    @staticmethod
    def rescale(guided: torch.Tensor, eps_c: torch.Tensor, t=None) -> torch.Tensor:
        """The guided prediction scaled to the conditional's norm over each packed token's features."""
        h, w = guided.shape[-2:]
        g, c = pack(guided), pack(eps_c)
        return unpack(g * (c.norm(dim=-1, keepdim=True) / g.norm(dim=-1, keepdim=True)), h, w)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        if inputs.channels is not None or inputs.residuals or inputs.tokens:
            raise UsageError("Qwen-Image takes no ControlNet, adapter or inpainting channels yet")
        b, _, h, w = x.shape
        ctx = inputs.context
        out = self.transformer(
            hidden_states=pack(x),
            timestep=t.expand(b).to(x.dtype) / 1000,
            encoder_hidden_states=ctx.hidden,
            encoder_hidden_states_mask=None if ctx.mask.all() else ctx.mask,
            img_shapes=[[(1, h // 2, w // 2)]] * b,
            return_dict=False,
        )[0]
        return unpack(out, h, w)


class QwenImage(PackedFlowMatching):
    fp16, bf16_first = "refuse", True  # ComfyUI's QwenImage: bf16 and fp32 only
    name, label = "qwen-image", "Qwen-Image"
    variants = ("qwen-image",)
    transformer_class = "QwenImageTransformer2DModel"
    # rotary axes and a text width but, unlike Flux's, no pooled text projection
    marks, unmarks = ("axes_dims_rope", "joint_attention_dim"), ("pooled_projection_dim",)
    lora_targets = ATTENTION_TARGETS

    def conditioning(self, components):
        return ChatConditioning(components)

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """`guidance` is Qwen-Image's true CFG scale (QwenImagePipeline's true_cfg_scale), in the loop
        with the negative prompt; nothing is embedded."""
        self.refuse_true_cfg(true_cfg, "QwenImagePipeline's true_cfg_scale")
        return guidance, None

    def denoiser(self, components, guidance: float | None = None):
        return QwenCall(components.unet)

    def defaults(self, components) -> dict:
        return {"steps": 50, "guidance": 4.0}  # QwenImagePipeline's defaults

    def lora_host(self, components, scheduler):
        """QwenImagePipeline's loader reads diffusers/peft files and the community layouts it converts (around
        the video VAE itself: the pipeline reads its config)."""
        vae = components.vae.vae if isinstance(components.vae, FrameVAE) else components.vae
        return diffusers_pipeline("QwenImagePipeline", dataclasses.replace(components, vae=vae), scheduler)

    def model_index(self, components, index: dict) -> dict:
        return qwen_image_index(index)

    def adapt(self, components):
        if not isinstance(components.vae, FrameVAE):
            components.vae = FrameVAE(components.vae)
        return components

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_qwen_image(seed)
