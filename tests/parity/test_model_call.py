"""The model-call contract against diffusers' own UNet calls: UNetCall maps Inputs to exactly the
keyword arguments diffusers' pipelines pass (SD1, SDXL, inpainting, the x4 upscaler, ControlNet
residuals), the Tiled wrapper blends as the UNet over windows did, and every registered family is
told from the folder its tiny builder writes."""

import pytest
import torch

from latentdiff.families.clip import Embeddings
from latentdiff.families.registry import FAMILIES, family_of, family_of_folder
from latentdiff.families.unet import UNetCall
from latentdiff.models.assemble import load_components
from latentdiff.models.testing import make_tiny
from latentdiff.sampling.model_call import BlockResiduals, ImageChannels, ImageTokens, Inputs
from latentdiff.sampling.wrappers import Tiled, blend_windows


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_sd1, tiny_sd2, tiny_sdxl, tiny_refiner):
    """variant -> the folder of its tiny model, one per variant of every registered family (the
    session's shared ones where conftest.py builds them)."""
    shared = {"sd1": tiny_sd1, "sd2": tiny_sd2, "sdxl": tiny_sdxl, "sdxl_refiner": tiny_refiner}
    root = tmp_path_factory.mktemp("families")
    return {v: shared.get(v) or make_tiny(root / v, v, seed=3) for f in FAMILIES.values() for v in f.variants}


@pytest.fixture(scope="module")
def models(folders):
    """variant -> its components; the pixel SR stage (IF's layout, no VAE) as a cascade loads it (a pixel
    base loads as any model does)."""
    from latentdiff.workflows.pixel import load_pixel_stage

    stages = set(FAMILIES["pixel-sr"].variants)
    return {v: (load_pixel_stage if v in stages else load_components)(path) for v, path in folders.items()}


def test_every_registered_family_is_detected_from_its_tiny_folder(folders, models):
    assert len(FAMILIES) >= 3 and len(folders) >= 6
    for name, family in FAMILIES.items():
        for v in family.variants:
            assert family_of_folder(folders[v]) is family, (name, v)
            assert family_of(models[v]) is family, (name, v)
            if family.name != "upscaler":
                assert family.variant(models[v]) == v.replace("-inpaint", "")
    assert FAMILIES["upscaler"].upscales and not FAMILIES["sd"].upscales
    assert FAMILIES["sd"].inpainting(models["sd1-inpaint"]) and not FAMILIES["sd"].inpainting(models["sd1"])


def _context(c, batch: int, seed: int = 0) -> Embeddings:
    """Random text conditioning shaped as the model's UNet takes it (SDXL: pooled text and size ids)."""
    g = torch.Generator().manual_seed(seed)
    cfg = c.unet.config
    hidden = torch.randn(batch, 77, cfg.cross_attention_dim, generator=g)
    if cfg.get("addition_embed_type") != "text_time":
        return Embeddings(hidden)
    n_ids = (cfg.projection_class_embeddings_input_dim - 32) // cfg.addition_time_embed_dim
    ids = torch.tensor([[64.0, 64, 0, 0, 64, 64][:n_ids]]).repeat(batch, 1)
    return Embeddings(hidden, {"text_embeds": torch.randn(batch, 32, generator=g), "time_ids": ids})


def _latents(batch: int, channels: int, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", ["sd1", "sd2", "sdxl", "sdxl_refiner", "sd1-inpaint", "x4"])
def test_family_call_equals_the_direct_unet_call(models, variant):
    c = models[variant]
    model = family_of(c).denoiser(c)
    ctx = _context(c, 2)
    x, t = _latents(2, 4), torch.tensor(500)
    extra = c.unet.config.in_channels - 4
    channels, direct = None, {}
    if extra:  # inpainting's mask + masked latents (5), the upscaler's low-res image (3) and its noise level
        labels = torch.tensor([20, 20]) if c.unet.config.num_class_embeds else None
        channels = ImageChannels(_latents(2, extra, seed=2), labels)
        direct = {} if labels is None else {"class_labels": labels}
    mine = model(x, t, Inputs(ctx, channels))
    sample = x if channels is None else torch.cat([x, channels.concat], dim=1)
    theirs = c.unet(sample, t, encoder_hidden_states=ctx.hidden, added_cond_kwargs=ctx.added or None, **direct).sample
    assert mine.shape == x.shape and mine.abs().sum() > 0
    assert torch.equal(mine, theirs)


def test_controlnet_residuals_equal_diffusers(models):
    from diffusers import ControlNetModel

    c = models["sd1"]
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(c.unet, conditioning_embedding_out_channels=(8, 16, 16, 16)).eval()
    for zero_conv in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
        torch.nn.init.normal_(zero_conv.weight, std=0.02)  # zero-initialised by diffusers: give them weights that show
    hint = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))

    def control(x, t, inputs):
        down, mid = controlnet(
            x, t, encoder_hidden_states=inputs.context.hidden, controlnet_cond=hint, return_dict=False
        )
        return BlockResiduals(tuple(down), mid)

    ctx, x, t = _context(c, 2), _latents(2, 4), torch.tensor(300)
    with torch.no_grad():
        mine = UNetCall(c.unet)(x, t, Inputs(ctx, residuals=(control,)))
        down, mid = controlnet(x, t, encoder_hidden_states=ctx.hidden, controlnet_cond=hint, return_dict=False)
        theirs = c.unet(
            x,
            t,
            encoder_hidden_states=ctx.hidden,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        plain = c.unet(x, t, encoder_hidden_states=ctx.hidden).sample
        twice = UNetCall(c.unet)(x, t, Inputs(ctx, residuals=(control, control)))
        doubled = c.unet(
            x,
            t,
            encoder_hidden_states=ctx.hidden,
            down_block_additional_residuals=[d + d for d in down],
            mid_block_additional_residual=mid + mid,
        ).sample
    assert torch.equal(mine, theirs)
    assert not torch.allclose(mine, plain, atol=1e-4), "the residuals must reach the UNet"
    assert torch.equal(twice, doubled)  # several controls: their residuals summed


def test_image_tokens_go_in_as_diffusers_image_embeds(models):
    c = models["sd1"]
    ctx, x, t = _context(c, 2), _latents(2, 4), torch.tensor(10)
    tokens = ImageTokens(torch.randn(2, 4, 32))
    kwargs = UNetCall.kwargs(x, t, Inputs(ctx, tokens=(tokens,)))
    assert kwargs["added_cond_kwargs"] == {"image_embeds": [tokens.embeds]}
    assert UNetCall.kwargs(x, t, Inputs(ctx))["added_cond_kwargs"] is None  # as before: SD1 takes no added inputs


def test_tiled_equals_the_unet_over_blended_windows(models):
    """Tiled(UNetCall) == the former TiledUNet: the UNet over windows of [latents, low-res image]."""
    c = models["x4"]
    ctx, x, t = _context(c, 2), _latents(2, 4, size=40), torch.tensor(700)
    channels = ImageChannels(_latents(2, 3, size=40, seed=5), torch.tensor([20, 20]))
    with torch.no_grad():
        mine = Tiled(UNetCall(c.unet), 16)(x, t, Inputs(ctx, channels))

        def run(window):  # the former TiledUNet.__call__ on the loop's concatenated input
            return c.unet(window, t, encoder_hidden_states=ctx.hidden, class_labels=channels.class_labels).sample

        theirs = blend_windows(torch.cat([x, channels.concat], dim=1), 16, run)
    assert mine.shape == x.shape
    assert torch.equal(mine, theirs)
