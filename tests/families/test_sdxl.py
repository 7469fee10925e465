"""SDXL through the one denoising loop: parity with diffusers' SDXL pipelines on tiny models."""

import numpy as np
import pytest
import torch
from helpers import run_cli_here

from latentdiff import Pipeline
from latentdiff.sampling.loop import SCHEDULERS, make_scheduler

SIZE = dict(width=32, height=32)


def _ours(path, dtype="fp32"):
    p = Pipeline.from_pretrained(path, device="cpu", dtype=dtype)
    p.progress = False
    return p


@pytest.fixture(scope="module")
def pipes(tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    return _ours(tiny_sdxl), ref


def max_pixel_diff(a, b) -> int:
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max()) for x, y in zip(a, b))


def reference(ref, scheduler_config, prompt, scheduler, steps, guidance, seed, negative="", **kw):
    ref.scheduler = make_scheduler(scheduler_config, scheduler)
    if hasattr(ref.scheduler, "noise_sampler_seed"):  # DPM++ SDE: ours seeds image k's Brownian tree with its seed
        ref.scheduler.noise_sampler_seed = [seed]
    if scheduler == "tcd":  # the pipeline passes eta 0 to a step that takes it; ours: TCD's own 0.3
        kw = {"eta": 0.3, **kw}
    return ref(
        prompt,
        negative_prompt=negative or None,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=[torch.Generator("cpu").manual_seed(seed)],
        **SIZE,
        **kw,
    ).images


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_matches_diffusers_sdxl(pipes, scheduler, guidance):
    ours, ref = pipes
    mine = ours("a red apple", steps=2, guidance=guidance, seed=5, scheduler=scheduler, **SIZE)
    theirs = reference(ref, ours.components.scheduler_config, "a red apple", scheduler, 2, guidance, 5)
    assert np.asarray(mine[0]).std() > 5, "a flat image would make this comparison meaningless"
    assert max_pixel_diff(mine, theirs) <= 1


def test_negative_prompt_is_encoded_and_no_negative_gives_zeros(pipes):
    ours, ref = pipes
    cfg = ours.components.scheduler_config
    mine = ours("photo of a cat", negative_prompt="blue sky", steps=2, guidance=6.0, seed=2, **SIZE)
    theirs = reference(ref, cfg, "photo of a cat", None, 2, 6.0, 2, negative="blue sky")
    assert max_pixel_diff(mine, theirs) <= 1
    _, uncond = ours.conditioning(["photo of a cat"], [""], 32, 32)
    assert not uncond.hidden.any() and not uncond.added["text_embeds"].any()
    assert max_pixel_diff(mine, ours("photo of a cat", steps=2, guidance=6.0, seed=2, **SIZE)) > 1


def test_micro_conditioning_and_pooled_embeddings(pipes):
    ours, _ = pipes
    cond, _ = ours.conditioning(["a red apple"], None, 48, 32)
    assert cond.hidden.shape == (1, 77, 72)  # both encoders' penultimate states, side by side
    assert cond.added["text_embeds"].shape == (1, 32)
    assert cond.added["time_ids"].tolist() == [[48, 32, 0, 0, 48, 32]]


def test_long_prompt_is_chunked_for_both_encoders(pipes):
    ours, _ = pipes
    long = "a green pear on a table " * 20
    cond, uncond = ours.conditioning([long], ["blue sky"], 32, 32)
    assert cond.hidden.shape[1] >= 2 * 77 and cond.hidden.shape == uncond.hidden.shape
    ids = ours.conditioning.tokenize([long])
    assert ids[0].shape == ids[1].shape and ids[0].shape[1] >= 2
    head = ours(long, steps=2, guidance=1.0, seed=0, **SIZE)
    tail = ours(long + " photo of a cat", steps=2, guidance=1.0, seed=0, **SIZE)
    assert max_pixel_diff(head, tail) > 1, "words past token 77 must still matter"


@pytest.mark.parametrize("scheduler", ["euler", "heun"])  # heun: the second-order hand-off rule
def test_refiner_handoff_matches_diffusers(pipes, tiny_sdxl, tiny_refiner, scheduler):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    ours, base = pipes
    refiner = _ours(tiny_refiner)
    ours.set_refiner(refiner, 0.7)
    try:
        mine = ours("a red apple", steps=5, guidance=5.0, seed=3, scheduler=scheduler, **SIZE)
    finally:
        ours.refiner = None
    ref2 = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_refiner, add_watermarker=False)
    ref2.set_progress_bar_config(disable=True)
    ref2.scheduler = make_scheduler(refiner.components.scheduler_config, scheduler)
    gens = [torch.Generator("cpu").manual_seed(3)]
    base.scheduler = make_scheduler(ours.components.scheduler_config, scheduler)
    latents = base(
        "a red apple",
        num_inference_steps=5,
        guidance_scale=5.0,
        generator=gens,
        denoising_end=0.7,
        output_type="latent",
        **SIZE,
    ).images
    theirs = ref2(
        "a red apple", image=latents, num_inference_steps=5, guidance_scale=5.0, generator=gens, denoising_start=0.7
    ).images
    assert max_pixel_diff(mine, theirs) <= 1
    plain = ours("a red apple", steps=5, guidance=5.0, seed=3, scheduler=scheduler, **SIZE)
    assert max_pixel_diff(mine, plain) > 1, "the refiner must change the image"


def test_refiner_start_is_checked(pipes, tiny_refiner):
    from latentdiff import UsageError

    ours, _ = pipes
    with pytest.raises(UsageError, match="between 0 and 1"):
        ours.set_refiner(_ours(tiny_refiner), 1.5)


def test_fp16_vae_is_upcast_and_an_overflowing_one_is_redone_in_fp32(tiny_sdxl):
    pipe = _ours(tiny_sdxl, "fp16")
    assert pipe.components.unet.dtype == torch.float16
    assert pipe.components.vae.dtype == torch.float32, "SDXL's VAE config asks for fp32 decoding (force_upcast)"
    vae = pipe.components.vae
    vae.to(torch.float16)
    vae.register_to_config(force_upcast=False)
    with torch.no_grad():  # force an fp16 overflow: activations past fp16's 65504 early in the decoder
        vae.decoder.conv_in.weight.fill_(1000.0)
        vae.decoder.conv_in.bias.fill_(60000.0)
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(vae.decode(z.half()).sample).all(), "the VAE must overflow in fp16 for this test"
    with pytest.warns(UserWarning, match="overflowed"):
        image = pipe("a red apple", steps=2, guidance=5.0, seed=1, **SIZE)[0]
    assert np.asarray(image).std() > 0 and vae.dtype == torch.float16


def test_cli_generates_with_sdxl_and_refiner(tiny_sdxl, tiny_refiner, tmp_path):
    r = run_cli_here(
        "generate",
        "a red apple",
        "--model",
        tiny_sdxl,
        "--refiner",
        tiny_refiner,
        "--refiner-start",
        "0.6",
        "--steps",
        "3",
        "--width",
        "32",
        "--height",
        "32",
        "--out",
        tmp_path,
        "--quiet",
        "--dtype",
        "fp32",
    )
    assert r.returncode == 0, r.stderr
    from latentdiff.images.write import read_params

    params = read_params(r.stdout.strip())
    assert params["refiner_start"] == 0.6 and params["refiner"].endswith("sdxl-refiner")
    r = run_cli_here("generate", "x", "--model", tiny_sdxl, "--refiner-start", "0.6")
    assert r.returncode == 2 and "needs --refiner" in r.stderr and "Traceback" not in r.stderr


def test_token_weights_hook_scales_then_restores_the_mean(pipes):
    """The encoder step takes per-token weights (A1111 emphasis) for prompt syntax to plug into."""
    from latentdiff.families.clip import apply_token_weights

    hidden = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])  # (B=1, 1 chunk * 2 tokens, D=2), mean 2
    weights = torch.tensor([[[2.0, 1.0]]])
    # scaled: [[2, 6], [2, 2]] (mean 3); times 2/3 restores the mean of 2
    assert torch.allclose(apply_token_weights(hidden, weights), torch.tensor([[[4 / 3, 4.0], [4 / 3, 4 / 3]]]))
    ours, _ = pipes
    ids = ours.conditioning.tokenize(["a red apple"])
    plain = ours.conditioning.embed(ids)
    ones = ours.conditioning.embed(ids, [torch.ones(i.shape) for i in ids])
    assert torch.allclose(plain.hidden, ones.hidden, atol=1e-6)
    heavy = ours.conditioning.embed(ids, [None, torch.full(ids[1].shape, 1.0).index_fill_(2, torch.tensor([1]), 1.5)])
    assert not torch.allclose(plain.hidden[..., 32:], heavy.hidden[..., 32:])  # the second encoder's half moved
    assert torch.equal(plain.hidden[..., :32], heavy.hidden[..., :32])  # the first encoder's did not


def test_clip_skip_matches_diffusers(pipes):
    ours, ref = pipes
    cond, _ = ours.conditioning(["a red apple"], None, 32, 32, clip_skip=2)  # A1111 numbering
    expected = ref.encode_prompt("a red apple", do_classifier_free_guidance=False, clip_skip=1)[0]
    assert cond.hidden.shape == expected.shape and torch.allclose(cond.hidden, expected, atol=1e-5)
