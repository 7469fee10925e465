"""Z-Image (Alibaba Tongyi 2025; Turbo and base): a 6B single-stream DiT (ZImageTransformer2DModel:
text tokens refined, then one sequence of text and 2x2-patched image tokens) conditioned on the
second-to-last hidden states of Qwen3 for the prompt in its chat template (padding dropped), the
Flux VAE, FlowMatchEulerDiscreteScheduler (shift 3.0), and classifier-free guidance written as
pos + g (pos - neg) (so g = 0, Turbo's setting, is unguided). The transformer predicts the
negated flow and takes the time as 1 - t/1000. Computed as diffusers' ZImagePipeline computes it.

The loop sees ordinary (B, 16, h, w) latents; the transformer patchifies inside its call."""

from __future__ import annotations

import torch

from latentdiff.errors import UsageError
from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.flow import ATTENTION_TARGETS, PackedFlowMatching, calculate_shift
from latentdiff.families.qwen_image import ChatConditioning
from latentdiff.families.qwen_tiny import tiny_z_image, z_image_index
from latentdiff.sampling.model_call import Inputs

MAX_SEQUENCE_LENGTH = 512  # ZImagePipeline's default prompt length (the prompt is padded to it)


class Qwen3Conditioning(ChatConditioning):
    """Prompts -> MaskedContext, as ZImagePipeline._encode_prompt: the prompt as the user's turn in
    the tokenizer's chat template (thinking on: no empty think block), padded to
    `max_sequence_length` tokens, the text model's second-to-last hidden states of the real tokens."""

    drop, layer, family = 0, 2, "Z-Image"

    def tokens(self, texts: list[str]):
        framed = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True, enable_thinking=True
            )
            for t in texts
        ]
        n = self.max_sequence_length
        return self.tokenizer(framed, padding="max_length", max_length=n, truncation=True, return_tensors="pt")


class ZImageCall:
    """A ZImageTransformer2DModel as a Denoiser: each image a one-frame (C, 1, h, w) latent with its
    own unpadded text tokens, the time as 1 - t/1000, the prediction negated. `rescale` is ZImagePipeline's
    CFG normalisation (`normalization` > 0: the guided prediction's norm capped at that many times the
    conditional's, per image) and truncation (unguided where 1 - t/1000 passes `truncation`)."""

    def __init__(self, transformer, normalization: float = 0.0, truncation: float = 1.0):
        self.transformer = transformer
        self.dtype = transformer.dtype
        self.normalization, self.truncation = normalization, truncation

    def rescale(self, guided: torch.Tensor, eps_c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if ((1000 - t.float()) / 1000).item() > self.truncation:  # in fp32, as ZImagePipeline's t_norms
            return eps_c
        if self.normalization <= 0:
            return guided
        cap = torch.linalg.vector_norm(eps_c.flatten(1), dim=1) * self.normalization
        norm = torch.linalg.vector_norm(guided.flatten(1), dim=1)
        scale = torch.where(norm > cap, cap / norm, torch.ones_like(norm))
        return guided * scale.view(-1, *[1] * (guided.dim() - 1))

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        if inputs.channels is not None or inputs.residuals or inputs.tokens:
            raise UsageError("Z-Image takes no ControlNet, adapter or inpainting channels yet")
        ctx = inputs.context
        texts = [h[m.bool()] for h, m in zip(ctx.hidden, ctx.mask)]
        out = self.transformer(
            list(x.unsqueeze(2).unbind(0)), (1000 - t.expand(x.shape[0])) / 1000, texts, return_dict=False
        )[0]
        return -torch.stack([o.float() for o in out]).squeeze(2).to(x.dtype)


class ZImage(PackedFlowMatching):
    fp16, bf16_first = "refuse", True  # ComfyUI's ZImage: bf16 and fp32 only (fp16 where a file says it allows it)
    name, label = "z-image", "Z-Image"
    variants = ("z-image",)
    transformer_class = "ZImageTransformer2DModel"
    marks = ("all_patch_size", "cap_feat_dim")
    lora_targets = ATTENTION_TARGETS

    def conditioning(self, components):
        return Qwen3Conditioning(components, MAX_SEQUENCE_LENGTH)

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """ZImagePipeline's guidance_scale g guides as pos + g (pos - neg): the loop's scale g + 1."""
        self.refuse_true_cfg(true_cfg, "ZImagePipeline's guidance_scale")
        return guidance + 1.0, None

    def denoiser(self, components, guidance: float | None = None, **options):
        return ZImageCall(components.unet, **options)

    def guide_options(self, normalization: float = 0.0, truncation: float = 1.0) -> dict:
        """ZImagePipeline's cfg_normalization and cfg_truncation (the model card's CFG settings of Z-Image base)."""
        return (
            {}
            if (normalization, truncation) == (0.0, 1.0)
            else {"normalization": normalization, "truncation": truncation}
        )

    def set_timesteps(self, scheduler, steps: int, size: tuple[int, int], factor: int) -> None:
        """ZImagePipeline's schedule: sigmas 1 .. 1/steps (in fp32), the scheduler's shift (mu of
        the token count where it shifts dynamically)."""
        sigmas = torch.linspace(1.0, 1 / steps, steps).tolist()
        mu = calculate_shift((size[1] // factor // 2) * (size[0] // factor // 2), scheduler.config)
        scheduler.set_timesteps(sigmas=sigmas, mu=mu)

    def defaults(self, components) -> dict:
        return {"steps": 50, "guidance": 5.0}  # ZImagePipeline's defaults (Turbo: 8 steps at 0)

    def lora_host(self, components, scheduler):
        """ZImagePipeline's loader reads diffusers/peft files and the community layouts it converts."""
        return diffusers_pipeline("ZImagePipeline", components, scheduler)

    def model_index(self, components, index: dict) -> dict:
        return z_image_index(index)

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_z_image(seed)
