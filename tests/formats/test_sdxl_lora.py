"""LoRA on SDXL: kohya files (SGM block names, `lora_te1_` / `lora_te2_`, alpha) and diffusers
files merged at generation, held against diffusers' load_lora_weights + fuse_lora; a LoRA
fine-tune of SDXL whose run folder loads in latentdiff and in diffusers alike."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from latentdiff import Pipeline
from latentdiff.sampling.loop import make_scheduler

RANK, ALPHA = 4, 2.0
SIZE = dict(width=32, height=32)
# (kohya name, diffusers module, out, in): the tiny SDXL has 1 layer per block, so SGM's
# input_blocks_3 is down_blocks.1 and output_blocks_0 is up_blocks.0.
KOHYA_LAYERS = [
    (
        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q",
        "unet",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        64,
        64,
    ),
    (
        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn2_to_k",
        "unet",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        64,
        72,
    ),
    (
        "lora_unet_middle_block_1_transformer_blocks_1_attn1_to_out_0",
        "unet",
        "mid_block.attentions.0.transformer_blocks.1.attn1.to_out.0",
        64,
        64,
    ),
    (
        "lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_v",
        "unet",
        "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
        64,
        72,
    ),
    (
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "text_encoder",
        "encoder.layers.0.self_attn.q_proj",
        32,
        32,
    ),
    (
        "lora_te1_text_model_encoder_layers_1_self_attn_out_proj",
        "text_encoder",
        "encoder.layers.1.self_attn.out_proj",
        32,
        32,
    ),
    (
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
        "text_encoder_2",
        "encoder.layers.0.self_attn.q_proj",
        40,
        40,
    ),
    (
        "lora_te2_text_model_encoder_layers_2_self_attn_out_proj",
        "text_encoder_2",
        "encoder.layers.2.self_attn.out_proj",
        40,
        40,
    ),
]


def low_rank(seed: int, out_dim: int, in_dim: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(RANK, in_dim, generator=g) * 0.5, torch.randn(out_dim, RANK, generator=g) * 0.5


def kohya_sdxl_file(path, seed=0):
    """A kohya SDXL LoRA as sd-scripts writes it: SGM UNet names, both encoders, alpha."""
    tensors = {}
    for i, (key, _, _, out_dim, in_dim) in enumerate(KOHYA_LAYERS):
        down, up = low_rank(seed + i, out_dim, in_dim)
        tensors.update(
            {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(ALPHA)}
        )
    save_file(tensors, path)
    return path


def diffusers_sdxl_file(path, seed=50):
    """diffusers / peft layout (lora_A / lora_B, no alpha: scale 1): a UNet layer and a layer of
    the second encoder."""
    (_, _, unet_layer, o1, i1), (_, _, te2_layer, o2, i2) = KOHYA_LAYERS[0], KOHYA_LAYERS[6]
    (d1, u1), (d2, u2) = low_rank(seed, o1, i1), low_rank(seed + 1, o2, i2)
    save_file(
        {
            f"unet.{unet_layer}.lora_A.weight": d1,
            f"unet.{unet_layer}.lora_B.weight": u1,
            f"text_encoder_2.text_model.{te2_layer}.lora_A.weight": d2,
            f"text_encoder_2.text_model.{te2_layer}.lora_B.weight": u2,
        },
        path,
    )
    return path


def weight(pipe, part: str, layer: str) -> torch.Tensor:
    module = getattr(pipe.components, part)
    return (
        getattr(module, "text_model", module).get_submodule(layer).weight
        if part != "unet"
        else module.get_submodule(layer).weight
    )


def load(model, *loras):
    p = Pipeline.from_pretrained(model, device="cpu", dtype="fp32", loras=[str(x) for x in loras])
    p.progress = False
    return p


@pytest.fixture(scope="module")
def base(tiny_sdxl):
    return load(tiny_sdxl)


def max_pixel_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


def diffusers_pixels(model, lora, scale, scheduler_config, prompt="a red apple", **lora_kw):
    from diffusers import StableDiffusionXLPipeline

    ref = StableDiffusionXLPipeline.from_pretrained(model, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(scheduler_config, "euler")
    ref.load_lora_weights(str(lora), **lora_kw)
    ref.fuse_lora(lora_scale=scale)
    return ref(
        prompt, num_inference_steps=3, guidance_scale=5.0, generator=[torch.Generator("cpu").manual_seed(4)], **SIZE
    ).images[0]


def test_kohya_sdxl_lora_merges_every_part_and_matches_diffusers_pixels(tiny_sdxl, base, tmp_path):
    f = kohya_sdxl_file(tmp_path / "style.safetensors")
    ours = load(tiny_sdxl, f"{f}:0.6")
    for i, (_, part, layer, out_dim, in_dim) in enumerate(KOHYA_LAYERS):
        down, up = low_rank(i, out_dim, in_dim)
        expected = weight(base, part, layer) + 0.6 * (ALPHA / RANK) * up @ down
        assert torch.allclose(weight(ours, part, layer), expected, atol=1e-5), (part, layer)
    assert not any("lora" in n for n, _ in ours.components.unet.named_modules()), "fused and unloaded"
    mine = ours("a red apple", steps=3, guidance=5.0, seed=4, scheduler="euler", **SIZE)[0]
    theirs = diffusers_pixels(tiny_sdxl, f, 0.6, ours.components.scheduler_config)
    plain = base("a red apple", steps=3, guidance=5.0, seed=4, scheduler="euler", **SIZE)[0]
    assert np.asarray(mine).std() > 5 and max_pixel_diff(mine, plain) > 2, "the LoRA must change the image"
    assert max_pixel_diff(mine, theirs) <= 2


def test_stacked_sdxl_loras_add_up_and_scale_zero_is_the_base_exactly(tiny_sdxl, base, tmp_path):
    k, d = kohya_sdxl_file(tmp_path / "a.safetensors"), diffusers_sdxl_file(tmp_path / "b.safetensors")
    pipe = load(tiny_sdxl, f"{k}:0.5", f"{d}:-1.5")
    for i, seed in ((0, 50), (6, 51)):
        _, part, layer, out_dim, in_dim = KOHYA_LAYERS[i]
        (kd, ku), (dd, du) = low_rank(i, out_dim, in_dim), low_rank(seed, out_dim, in_dim)
        expected = weight(base, part, layer) + 0.5 * (ALPHA / RANK) * ku @ kd - 1.5 * du @ dd
        assert torch.allclose(weight(pipe, part, layer), expected, atol=1e-5), part
    zero = load(tiny_sdxl, f"{k}:0", f"{d}:0")("a red apple", steps=2, seed=3, **SIZE)[0]
    assert np.array_equal(np.asarray(zero), np.asarray(base("a red apple", steps=2, seed=3, **SIZE)[0]))


def test_a_lora_of_another_model_is_one_clear_error(tiny_sdxl, tmp_path, capsys):
    from helpers import fails
    from test_lora_files import kohya_file

    sd1 = kohya_file(tmp_path / "sd1.safetensors")
    assert "does not fit this model: Target modules" in fails(capsys, "x", "--model", tiny_sdxl, "--lora", sd1)


# ---- finetune on SDXL ------------------------------------------------------------------------


def sdxl_dataset(root):
    """Two captioned images whose center crops at 32 px sit off the middle (49 and 56 px wide)."""
    from PIL import Image

    root.mkdir()
    for i, (color, size) in enumerate([("red", (49, 40)), ("blue", (56, 32))]):
        Image.new("RGB", size, color).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {color} square")
    return root


def test_random_crops_report_their_corner_as_sdxl_counts_it():
    """The size ids name the crop of the mirrored image when mirrored (diffusers mirrors, then crops)."""
    import random

    from PIL import Image

    from latentdiff.images.read import place, transform

    img = Image.effect_noise((70, 45), 60).convert("RGB")
    flips = set()
    for seed in range(8):
        p = place(img.size, 32, "random", True, random.Random(seed))
        h, w, top, left, th, tw = p.size_ids(img.size)
        assert (h, w, th, tw) == (45, 70, 32, 32)
        mirrored = img.resize(p.size, Image.Resampling.LANCZOS)
        if p.flipped:
            mirrored = mirrored.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        expected = transform(mirrored.crop((left, top, left + 32, top + 32)), 32)
        assert torch.equal(transform(img, 32, "random", True, random.Random(seed)), expected)
        flips.add(p.flipped)
    assert flips == {True, False}


@pytest.mark.parametrize("cache", [True, False])
def test_sdxl_training_batches_carry_pooled_embeddings_and_each_samples_size_ids(tiny_sdxl, tmp_path, cache):
    from latentdiff.families.registry import family_of
    from latentdiff.models.assemble import load_components
    from latentdiff.training.batches import BatchSource
    from latentdiff.training.data.dataset import ImageCaptionDataset
    from latentdiff.training.data.scan import scan_dataset

    c = load_components(tiny_sdxl)
    scan = scan_dataset(sdxl_dataset(tmp_path / "ds"), 32)
    captions = [r.caption for r in scan.records]
    data = ImageCaptionDataset(scan.records, 32, "center", flip=True, seed=0)
    source = BatchSource(
        c,
        data,
        captions,
        cache=cache,
        flip=True,
        train_text=False,
        caption_dropout=0.0,
        device=torch.device("cpu"),
        dtype=torch.float32,
        progress=False,
    )
    # 49x40 -> 39x32, center crop at left 3 (4 in the mirror image); 56x32 -> left 12 either way.
    by_caption = {
        "a red square": {(40, 49, 0, 3, 32, 32), (40, 49, 0, 4, 32, 32)},
        "a blue square": {(32, 56, 0, 12, 32, 32)},
    }
    seen = set()
    for step in range(8):
        gen = torch.Generator().manual_seed(step)
        latents, ids = source.latents([0, 1], gen, epoch=step)
        emb = source.context([0, 1], gen, ids)
        assert latents.shape == (2, 4, 8, 8)  # the tiny VAE downsamples 4x
        for caption, row in zip(captions, emb.added["time_ids"].tolist()):
            assert tuple(int(v) for v in row) in by_caption[caption]
            seen.add(tuple(row))
    assert len(seen) == 3, "both mirror views of the red image were drawn"
    expected, _ = family_of(c).conditioning(c)(captions, None, 32, 32)  # what generation uses
    assert torch.allclose(emb.hidden, expected.hidden, atol=1e-5)
    assert torch.allclose(emb.added["text_embeds"], expected.added["text_embeds"], atol=1e-5)


def finetune_sdxl(model, ds, out, **kw):
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.loop import finetune

    return finetune(
        FinetuneConfig(
            dataset=str(ds),
            model=str(model),
            out=str(out),
            max_steps=2,
            batch_size=2,
            resolution=32,
            lr=1e-2,
            lora_rank=2,
            flip=True,
            **kw,
        )
    )


def render(pipe, prompt="a red square"):
    return pipe(prompt, steps=3, guidance=5.0, seed=4, scheduler="euler", **SIZE)[0]


def test_sdxl_lora_finetune_generates_and_loads_in_diffusers_alike(tiny_sdxl, base, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    run = finetune_sdxl(
        tiny_sdxl,
        sdxl_dataset(tmp_path / "ds"),
        tmp_path / "run",
        train_text_encoder=True,
        validate_every=2,
        validation_steps=1,
        validation_prompts=["a red square"],
    )
    assert len(list((run / "samples").glob("step00000002-*.png"))) == 1  # generated mid-run, adapters live
    saved = load_file(str(run / "pytorch_lora_weights.safetensors"))
    assert {k.split(".")[0] for k in saved} == {"unet", "text_encoder", "text_encoder_2"}
    mine, half = render(load(run)), render(load(tiny_sdxl, f"{run}:0.5"))
    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(base.components.scheduler_config, "euler")
    ref.load_lora_weights(str(run))

    def theirs():
        return ref(
            "a red square",
            num_inference_steps=3,
            guidance_scale=5.0,
            generator=[torch.Generator("cpu").manual_seed(4)],
            **SIZE,
        ).images[0]

    assert max_pixel_diff(mine, render(base)) > 2, "two steps at lr 1e-2 must change the image"
    assert max_pixel_diff(mine, theirs()) <= 2
    kohya = (
        run / f"{run.name}.safetensors"
    )  # --lora-format both (the default): kohya's SDXL layout too, named after the run
    assert {k.split("_")[1] for k in load_file(str(kohya))} == {"unet", "te1", "te2"}
    assert max_pixel_diff(render(load(tiny_sdxl, kohya)), mine) <= 1
    ref.fuse_lora(lora_scale=0.5)
    assert max_pixel_diff(half, theirs()) <= 2 and max_pixel_diff(half, mine) > 2


def test_full_sdxl_finetune_is_an_sdxl_model_diffusers_loads(tiny_sdxl, base, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    run = finetune_sdxl(tiny_sdxl, sdxl_dataset(tmp_path / "ds"), tmp_path / "run", method="full")
    mine = render(load(run))
    ref = StableDiffusionXLPipeline.from_pretrained(run, add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = make_scheduler(base.components.scheduler_config, "euler")
    theirs = ref(
        "a red square",
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=[torch.Generator("cpu").manual_seed(4)],
        **SIZE,
    ).images[0]
    assert max_pixel_diff(mine, render(base)) > 2 and max_pixel_diff(mine, theirs) <= 2


def test_finetune_refuses_an_sdxl_refiner(tiny_refiner, tmp_path):
    from latentdiff import UsageError

    with pytest.raises(UsageError, match="SDXL refiner"):
        finetune_sdxl(tiny_refiner, sdxl_dataset(tmp_path / "ds"), tmp_path / "run")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_text_encoder_parts_that_feed_nothing_stay_frozen(tiny_sdxl, tmp_path, method):
    """SDXL takes the first encoder's penultimate layer: its last layer and final norm get no
    gradient, and DDP refuses trainable parameters that get none."""
    from latentdiff.models.assemble import load_components
    from latentdiff.training.config import FinetuneConfig
    from latentdiff.training.state import Setup, make_trainable, named_trainable

    c = load_components(tiny_sdxl)
    cfg = FinetuneConfig(dataset=str(tmp_path), model=str(tiny_sdxl), out=str(tmp_path / "run"), method=method)
    trainable = {id(p) for p in named_trainable(make_trainable(Setup(c, None, False, True), cfg)).values()}
    te1, te2 = (getattr(te, "text_model", te) for te in (c.text_encoder, c.text_encoder_2))

    def trained(module):
        return {id(p) for p in module.parameters()} & trainable

    assert not trained(te1.encoder.layers[-1]) and not trained(te1.final_layer_norm)
    assert trained(te1.encoder.layers[-2]) and trained(te2.encoder.layers[-1])
    assert trained(te2.final_layer_norm) or method == "lora"  # LoRA adapts attention only
