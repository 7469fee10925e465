"""`finetune --method lora` on the flow-matching transformer families (Flux.1 dev, SD 3.5 medium, Chroma,
Qwen-Image, Z-Image, FLUX.2 klein), on tiny random models (fp32, CPU): the loss falls on a toy set, the LoRA file loads in
diffusers' pipeline of the family and gives our pixels within 1/255, resume is exact, the
objective's draws and table are diffusers', and what is not supported is one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flow_parity import close, ours, pixels, reference, reference_pixels
from helpers import cfg, killed_after_first_checkpoint, max_diff, weights

from latentdiff.errors import UsageError
from latentdiff.training import checkpoint as ckpt
from latentdiff.training.loop import finetune

SIZE = (32, 32)


@pytest.fixture(scope="module")
def flow_models(tmp_path_factory):
    from latentdiff.models.testing import make_tiny

    root = tmp_path_factory.mktemp("flow-finetune")
    return {v: make_tiny(root / v, v, seed=1) for v in ("flux-dev", "sd3.5-medium", "chroma", "qwen-image", "z-image")}


def _cfg(dataset, model, out, **kw):
    return cfg(dataset, model, out, resolution=SIZE[0], **kw)


# (variant, diffusers' pipeline, our guidance, its arguments): Qwen-Image unguided (no negative prompt),
# Z-Image guided with the empty negative as ZImagePipeline guides.
LORA_RUNS = [
    ("flux-dev", "FluxPipeline", 3.5, {"guidance_scale": 3.5}),
    ("sd3.5-medium", "StableDiffusion3Pipeline", 3.5, {"guidance_scale": 3.5}),
    ("chroma", "ChromaPipeline", 3.5, {"guidance_scale": 3.5}),
    ("qwen-image", "QwenImagePipeline", 1.0, {}),
    ("z-image", "ZImagePipeline", 2.0, {"guidance_scale": 2.0}),
    pytest.param("klein", "Flux2KleinPipeline", 4.0, {"guidance_scale": 4.0}, marks=pytest.mark.slow),  # ~10 s here
]


@pytest.mark.parametrize("variant, cls_name, guidance, theirs", LORA_RUNS)
def test_lora_learns_and_loads_in_diffusers_with_our_pixels(
    flow_models, tiny_klein, dataset, tmp_path, variant, cls_name, guidance, theirs
):
    base = {**flow_models, "klein": tiny_klein}[variant]
    run = _cfg(dataset, base, tmp_path / "run", lr=3e-2, max_steps=12, batch_size=4, checkpoint_every=12)
    out = finetune(run)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-3:]) < 0.97 * np.mean(losses[:3]), losses
    written = sorted(p.name for p in out.glob("*.safetensors"))  # Flux.1: kohya's layout too (test_flux_kohya_out.py)
    assert "pytorch_lora_weights.safetensors" in written and len(written) == (2 if variant == "flux-dev" else 1)

    ref = reference(base, cls_name)
    ref.load_lora_weights(str(out))
    want = reference_pixels(ref, 7, 1, SIZE, prompt="a red circle", num_inference_steps=2, **theirs)
    args = dict(guidance=guidance, steps=2, width=SIZE[0], height=SIZE[1], seed=7)
    got = pixels(ours(out)("a red circle", **args))
    close(got, want)
    plain = pixels(ours(base)("a red circle", **args))
    assert np.abs(got - plain).max() > 5  # the LoRA changed the picture


def test_killed_and_resumed_equals_uninterrupted(flow_models, dataset, tmp_path, monkeypatch):
    run = dict(grad_accum=2, lr_schedule="cosine", warmup_steps=1, flip=True, weighting_scheme="logit_normal")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    finetune(_cfg(dataset, flow_models["flux-dev"], straight, **run))
    killed = lambda: finetune(_cfg(dataset, flow_models["flux-dev"], interrupted, **run))  # noqa: E731
    killed_after_first_checkpoint(killed, monkeypatch)
    assert ckpt.latest_checkpoint(interrupted).name == "step-00000002"
    finetune(_cfg(dataset, flow_models["flux-dev"], interrupted, **run, resume=True))
    assert max_diff(weights(straight), weights(interrupted)) == 0
    assert any(k.startswith("unet.single_transformer_blocks.") for k in weights(straight))


def test_the_objective_draws_as_diffusers_trainers():
    """x_t = (1 - s) x0 + s n at s from the scheduler's table by diffusers' density, target n - x0."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    from latentdiff.training.flow import FlowObjective, training_schedule

    sd3 = {"num_train_timesteps": 1000, "shift": 3.0}
    table = training_schedule(sd3)
    s = torch.linspace(1, 1000, 1000).flip(0) / 1000
    assert torch.allclose(table.sigmas, 3 * s / (1 + 2 * s))
    assert torch.allclose(training_schedule({**sd3, "use_dynamic_shifting": True}).sigmas, s)  # Flux dev: unshifted
    assert torch.allclose(training_schedule({**sd3, "use_dynamic_shifting": True}, 2.0).sigmas, 2 * s / (1 + s))
    seen = []
    objective = FlowObjective(lambda x, t, inputs: seen.append((x, t)) or torch.zeros_like(x), *_table(table), "mode")
    x0 = torch.randn(3, 4, 2, 2)
    loss = objective(x0, None, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(x0.shape, generator=gen)
    u = compute_density_for_timestep_sampling("mode", 3, mode_scale=1.29, generator=gen)
    sigma = table.sigmas[(u * 1000).long()].view(3, 1, 1, 1)
    assert torch.allclose(seen[0][0], (1 - sigma) * x0 + sigma * noise)
    assert torch.allclose(seen[0][1], sigma.flatten() * 1000)
    assert torch.isclose(loss, ((noise - x0) ** 2).mean())


def _table(table):
    return table.sigmas.float(), table.timesteps.float()


@pytest.mark.parametrize(
    "model, flags, says",
    [
        ("flux-dev", {"method": "full"}, "--method full on Flux.1 models is not supported yet"),
        ("flux-dev", {"snr_gamma": 5.0}, "--snr-gamma is for DDPM models"),
        ("sd3.5-medium", {"lora_format": "kohya"}, "--lora-format kohya on SD 3/3.5"),
        ("flux-dev", {"train_text_encoder": True}, "--train-text-encoder on Flux.1"),
        ("sd1", {"weighting_scheme": "mode"}, "--weighting-scheme applies to the flow-matching models"),
        ("klein", {"lora_format": "kohya"}, "--lora-format kohya on FLUX.2 models is not written yet"),
        ("sd3.5-medium", {"guidance": 2.0}, "--guidance is the distilled guidance Flux.1 dev embeds; sd3.5-medium"),
    ],
)
def test_what_is_not_supported_is_one_line_and_writes_nothing(
    flow_models, tiny_sd1, tiny_klein, dataset, tmp_path, model, flags, says
):
    path = {**flow_models, "sd1": tiny_sd1, "klein": tiny_klein}[model]
    with pytest.raises(UsageError, match=says) as e:
        finetune(_cfg(dataset, path, tmp_path / "out", **flags))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "key", ["lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_joint_blocks_0_x_block_attn_qkv"]
)
def test_sd3_takes_diffusers_loras_only_and_refuses_others_in_one_line(flow_models, tmp_path, capsys, key):
    """An SD 1.x LoRA, and a kohya SD3 one (diffusers' SD3 loader converts no community layout): exit 2, one
    line naming the layout, nothing written."""
    from helpers import fails
    from safetensors.torch import save_file

    tensors = {f"{key}.lora_down.weight": torch.randn(2, 32), f"{key}.lora_up.weight": torch.randn(32, 2)}
    save_file({**tensors, f"{key}.alpha": torch.tensor(2.0)}, str(tmp_path / "k.safetensors"))
    out = tmp_path / "out"
    line = fails(
        capsys, "a cat", "--model", flow_models["sd3.5-medium"], "--lora", tmp_path / "k.safetensors", "--out", out
    )
    assert "a kohya/A1111 LoRA" in line and not out.exists()


@pytest.mark.parametrize("variant", ["flux-dev", "sd3.5-medium"])
def test_cached_captions_are_the_captions_encoded_each_step(flow_models, variant):
    """The cache (`--cache`, frozen encoders) holds each caption's context as a batch encodes it (random crops
    encode every step)."""
    from latentdiff import Pipeline
    from latentdiff.families.registry import family_of

    c = Pipeline.from_pretrained(flow_models[variant], device="cpu", dtype="fp32").components
    conditioning = family_of(c).conditioning(c)
    texts = ["a red circle", "", "a blue square a blue square"]
    cached = conditioning.training_context(texts, cached=conditioning.embed_each(texts[::-1]))
    now = conditioning.training_context(texts)
    assert torch.allclose(cached.hidden, now.hidden, atol=1e-6) and torch.allclose(cached.pooled, now.pooled, atol=1e-6)
    assert not torch.allclose(now.hidden[0], now.hidden[2])
