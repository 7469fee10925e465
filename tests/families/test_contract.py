"""The family and model-call contracts hold for a family unlike the UNets: a tiny transformer
(Flux-like: latents packed into 2x2 patch tokens, position ids and a guidance embedding built inside
its own call) defined here, registered beside the shipped families, runs through the unchanged
`sampling.denoise` and gives what a hand-written loop gives."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import latentdiff.families.registry as registry
from latentdiff.families.base import Family
from latentdiff.sampling.loop import denoise, make_scheduler
from latentdiff.sampling.model_call import Inputs, StepContexts

SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}


def gens(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(k) for k in range(n)]


@dataclass
class TextTokens:
    """This family's conditioning: text tokens (B, T, D), nothing else."""

    tokens: torch.Tensor

    def cat(self, other: "TextTokens") -> "TextTokens":
        return TextTokens(torch.cat([self.tokens, other.tokens]))

    def to(self, dtype) -> "TextTokens":
        return TextTokens(self.tokens.to(dtype))


class TinyTransformer(torch.nn.Module):
    """Joint attention over text and image tokens, modulated by timestep + guidance embeddings."""

    def __init__(self, channels: int = 4, dim: int = 32):
        super().__init__()
        self.patch_in = torch.nn.Linear(channels * 4, dim)
        self.pos = torch.nn.Linear(2, dim)
        self.time = torch.nn.Linear(2, dim)
        self.attn = torch.nn.MultiheadAttention(dim, 4, batch_first=True)
        self.patch_out = torch.nn.Linear(dim, channels * 4)

    def forward(self, img, txt, ids, t_emb, g_emb):
        h = self.patch_in(img) + self.pos(ids) + self.time(torch.stack([t_emb, g_emb], -1))[:, None]
        joint = torch.cat([txt, h], dim=1)
        out, _ = self.attn(joint, joint, joint, need_weights=False)
        return self.patch_out(out[:, txt.shape[1] :])


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, C * 4): 2x2 patches as tokens."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = tokens.shape
    c = d // 4
    return tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def position_ids(h: int, w: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    return torch.stack([rows, cols], -1).reshape(1, -1, 2).float()


class TransformerCall:
    """The family's Denoiser: packing, position ids and the guidance embedding are its own business."""

    def __init__(self, net: TinyTransformer, guidance: float):
        self.net, self.guidance = net, guidance
        self.dtype = torch.float32

    def __call__(self, x, t, inputs: Inputs):
        b, _, h, w = x.shape
        t_emb = (t.float() / 1000).expand(b)
        g_emb = torch.full((b,), self.guidance)
        out = self.net(pack(x), inputs.context.tokens, position_ids(h, w).expand(b, -1, -1), t_emb, g_emb)
        return unpack(out, h, w)


class TinyFlux(Family):
    name, label, variants = "tinyflux", "a tiny transformer (test)", ("tinyflux",)

    def matches(self, unet: dict, vae: dict, index: dict) -> bool:
        return unet.get("_class_name") == "TinyTransformer"

    def conditioning(self, components):
        return lambda prompts: TextTokens(torch.stack([torch.full((3, 32), float(len(p))) for p in prompts]) / 10)

    def denoiser(self, components):
        return TransformerCall(components.unet, guidance=3.5)


def reference_loop(net, latents, text, steps: int, guidance: float, distilled: float):
    """The same sampling written out by hand, without the contract's types."""
    sched = make_scheduler(SCHEDULER, "euler")
    sched.set_timesteps(steps)
    b, _, h, w = latents.shape
    ids = position_ids(h, w).expand(2 * b, -1, -1)
    txt = torch.cat([torch.zeros_like(text), text])
    for t in sched.timesteps:
        x = sched.scale_model_input(torch.cat([latents, latents]), t)
        out = net(pack(x), txt, ids, (t.float() / 1000).expand(2 * b), torch.full((2 * b,), distilled))
        eps_u, eps_c = unpack(out, h, w).chunk(2)
        latents = sched.step(eps_u + guidance * (eps_c - eps_u), t, latents).prev_sample
    return latents


def test_a_transformer_family_runs_through_the_unchanged_loop(monkeypatch):
    monkeypatch.setattr(registry, "FAMILIES", {"tinyflux": TinyFlux(), **registry.FAMILIES})
    torch.manual_seed(0)
    net = TinyTransformer().eval()
    family = registry.family_for({"_class_name": "TinyTransformer"}, {})
    assert isinstance(family, TinyFlux)
    assert registry.family_for({"in_channels": 4, "addition_embed_type": "text_time"}, {}).name == "sdxl"

    components = type("C", (), {"unet": net})()
    cond = family.conditioning(components)(["a red apple", "a cat"])
    uncond = TextTokens(torch.zeros_like(cond.tokens))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sched = make_scheduler(SCHEDULER, "euler")
    sched.set_timesteps(4)
    with torch.no_grad():
        mine = denoise(family.denoiser(components), sched, latents.clone(), cond, uncond, 5.0, gens(2))
        theirs = reference_loop(net, latents.clone(), cond.tokens, 4, 5.0, 3.5)
    assert mine.shape == latents.shape and not torch.equal(mine, latents)
    assert torch.equal(mine, theirs)


class Recorder:
    """A Denoiser that records what each step's inputs held and predicts zeros."""

    dtype = torch.float32

    def __init__(self):
        self.seen = []

    def __call__(self, x, t, inputs):
        self.seen.append(inputs.context.tokens[:, 0, 0].tolist())
        return torch.zeros_like(x)


def test_step_contexts_choose_the_context_of_each_step():
    """Prompt editing: [cat:dog:2] is the cat for steps 0-1, the dog after; the negatives stay."""
    cat, dog, neg = (TextTokens(torch.full((1, 3, 32), v)) for v in (1.0, 2.0, -1.0))
    sched = make_scheduler(SCHEDULER, "euler")
    sched.set_timesteps(4)
    model = Recorder()
    denoise(model, sched, torch.zeros(1, 4, 8, 8), StepContexts((cat, dog), (0, 2)), neg, 7.0, gens(1))
    assert model.seen == [[-1.0, 1.0], [-1.0, 1.0], [-1.0, 2.0], [-1.0, 2.0]]  # unconditional row first
    sched.set_timesteps(4)
    model = Recorder()
    edited_negative = StepContexts((neg, cat), (0, 3))
    denoise(model, sched, torch.zeros(1, 4, 8, 8), StepContexts((cat, dog), (0, 1)), edited_negative, 7.0, gens(1))
    assert model.seen == [[-1.0, 1.0], [-1.0, 2.0], [-1.0, 2.0], [1.0, 2.0]]
    with pytest.raises(ValueError, match="rise from 0"):
        StepContexts((cat, dog), (1, 2))


def test_guidance_one_runs_the_conditional_half_alone():
    sched = make_scheduler(SCHEDULER, "euler")
    sched.set_timesteps(2)
    model = Recorder()
    cond, neg = TextTokens(torch.ones(1, 3, 32)), TextTokens(-torch.ones(1, 3, 32))
    denoise(model, sched, torch.zeros(1, 4, 8, 8), cond, neg, 1.0, gens(1))
    assert model.seen == [[1.0], [1.0]]
