"""Stable Diffusion 3 and 3.5 (Stability AI 2024; SD3 medium, SD 3.5 medium and large): a
rectified-flow MMDiT (SD3Transformer2DModel: joint attention over 2x2-patchified latents and text
tokens; SD 3.5 medium's MMDiT-X adds self-attention-only blocks), conditioned on the pooled vectors
of CLIP-L and CLIP-G side by side and on a joint text sequence: both CLIPs' penultimate hidden
states side by side, padded to T5's width, then T5's tokens (zeros where the model comes without
T5). Sampled with FlowMatchEulerDiscreteScheduler (shift 3.0) and ordinary classifier-free guidance
with negative prompts. Computed as diffusers' StableDiffusion3Pipeline computes it.

The transformer patchifies inside its own call, so the loop, the starts and the decode see
ordinary (B, 16, h, w) latents, as for Flux.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentdiff.errors import UsageError
from latentdiff.families.base import diffusers_pipeline
from latentdiff.families.flow import FlowMatching, calculate_shift
from latentdiff.families.flux import FluxConditioning
from latentdiff.families.flux import FluxContext as SD3Context  # the same pair: (B, T, D) tokens, (B, P) pooled
from latentdiff.families.sd3_tiny import sd3_index, tiny_sd3
from latentdiff.runtime.offload import execution_device
from latentdiff.sampling.model_call import Inputs

PATCH = 2  # every released SD3 transformer's patch side (the dynamic shift counts patches)
MAX_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline's default T5 length
# Recommended settings (the model cards' examples): SD 3.5 large 28 steps at 3.5, medium 40 at 4.5, SD3 medium 28 at 7.
# diffusers' train_dreambooth_lora_sd3.py's default LoRA layers: the joint attention's image and text projections.
LORA_TARGETS = tuple(
    f"attn.{m}" for m in ("add_k_proj", "add_q_proj", "add_v_proj", "to_add_out", "to_k", "to_out.0", "to_q", "to_v")
)
DEFAULTS = {
    "sd3.5-large": {"steps": 28, "guidance": 3.5},
    "sd3.5-medium": {"steps": 40, "guidance": 4.5},
    "sd3-medium": {"steps": 28, "guidance": 7.0},
}


class SD3Conditioning(FluxConditioning):
    """Prompts -> SD3Context, as StableDiffusion3Pipeline.encode_prompt: each CLIP's pooled
    (projected) output and penultimate hidden states of the prompt cut to the first tokenizer's
    window; T5's last hidden states padded (and cut) to `max_sequence_length` tokens, or zeros of the
    transformer's joint width without T5. Prompt text is taken as it is (no A1111 emphasis:
    diffusers applies none)."""

    def __init__(self, components, max_sequence_length: int = MAX_SEQUENCE_LENGTH):
        self.clips = [
            (components.text_encoder, components.tokenizer),
            (components.text_encoder_2, components.tokenizer_2),
        ]
        self.t5, self.t5_tok = components.text_encoder_3, components.tokenizer_3
        self.joint_width = components.unet.config.joint_attention_dim
        self.max_sequence_length = max_sequence_length

    def check_clip_skip(self, clip_skip) -> int:
        if clip_skip not in (1, None):
            raise UsageError(f"clip_skip does not apply to SD3 (it takes CLIP's penultimate layer), got {clip_skip!r}")
        return 1

    def _clip(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(both CLIPs' penultimate hidden states side by side (B, 77, D_l + D_g), their pooled vectors (B, P_l + P_g))."""
        window, dtype = self.clips[0][1].model_max_length, self.clips[0][0].dtype
        hidden, pooled = [], []
        for encoder, tokenizer in self.clips:
            out = encoder(self._ids(tokenizer, texts, window, execution_device(encoder)), output_hidden_states=True)
            hidden.append(out.hidden_states[-2].to(dtype))
            pooled.append(out[0])
        return torch.cat(hidden, -1), torch.cat(pooled, -1)

    def _t5(self, texts: list[str], like: torch.Tensor) -> torch.Tensor:
        if self.t5 is None:  # as diffusers: zeros in the first encoder's dtype
            return torch.zeros(
                len(texts), self.max_sequence_length, self.joint_width, dtype=like.dtype, device=like.device
            )
        ids = self._ids(self.t5_tok, texts, self.max_sequence_length, execution_device(self.t5))
        return self.t5(ids)[0].to(self.t5.dtype)

    def embed(self, texts: list[str]) -> SD3Context:
        clip, pooled = self._clip(texts)
        t5 = self._t5(texts, clip)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])).to(t5.device)  # CLIP's tokens padded to T5's width
        return SD3Context(torch.cat([clip, t5], dim=-2), pooled)


class SD3Call:
    """An SD3Transformer2DModel as a Denoiser: the latents, the scheduler's timestep (0..1000, as
    the pipeline passes it) and the context's tokens and pooled vector."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.dtype = transformer.dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        if inputs.channels is not None or inputs.residuals or inputs.tokens:
            raise UsageError(
                "SD3 takes no ControlNet, adapter or inpainting channels yet (plain, img2img or inpaint only)"
            )
        ctx = inputs.context
        return self.transformer(
            hidden_states=x,
            timestep=t.expand(x.shape[0]),
            encoder_hidden_states=ctx.hidden,
            pooled_projections=ctx.pooled,
            return_dict=False,
        )[0]


class SD3(FlowMatching):
    name, label = "sd3", "SD 3/3.5"
    variants = ("sd3.5-medium", "sd3.5-large", "sd3-medium")
    lora_targets = LORA_TARGETS
    weighting_scheme = "logit_normal"  # train_dreambooth_lora_sd3.py's default

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        # SD3Transformer2DModel's config: a cropped position embedding and a caption projection (no UNet or Flux has them).
        return "pos_embed_max_size" in unet and "caption_projection_dim" in unet

    def variant(self, components) -> str:
        config = components.unet.config
        if config.get("dual_attention_layers"):
            return "sd3.5-medium"
        return "sd3.5-large" if config.get("qk_norm") else "sd3-medium"

    def conditioning(self, components):
        return SD3Conditioning(components)

    def guidance(self, components, guidance: float, true_cfg: float = 1.0) -> tuple[float, float | None]:
        """Ordinary classifier-free guidance in the loop; SD3 embeds none, so a true CFG scale is refused."""
        self.refuse_true_cfg(true_cfg)
        return guidance, None

    def denoiser(self, components, guidance: float | None = None):
        return SD3Call(components.unet)

    def set_timesteps(self, scheduler, steps: int, size: tuple[int, int], factor: int) -> None:
        """StableDiffusion3Pipeline's schedule: the scheduler's own (shift 3.0); with a dynamic shift
        in its config, mu from the image's patch count (the pipeline's max_shift default 1.16)."""
        if not scheduler.config.get("use_dynamic_shifting"):
            scheduler.set_timesteps(steps)
            return
        side = factor * PATCH
        scheduler.set_timesteps(
            steps, mu=calculate_shift((size[1] // side) * (size[0] // side), scheduler.config, 1.16)
        )

    def defaults(self, components) -> dict:
        return dict(DEFAULTS[self.variant(components)])

    def size_step(self, components, factor: int) -> int:
        return components.unet.config.patch_size * factor

    def lora_host(self, components, scheduler):
        """StableDiffusion3Pipeline's loader reads diffusers/peft files of its transformer and CLIP encoders."""
        return diffusers_pipeline("StableDiffusion3Pipeline", components, scheduler)

    def model_index(self, components, index: dict) -> dict:
        return sd3_index(components, index)

    def tiny(self, variant: str | None = None, seed: int = 0) -> dict:
        return tiny_sd3(variant or self.variants[0], seed)
