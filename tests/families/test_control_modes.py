"""A ControlNet unit's residuals per mode, against the formulas of A1111's ControlNet extension
(soft injection: residual i times 0.825**(12 - i); CFG injection: none on the unconditional half)
and diffusers' guess mode; and its step range."""

import pytest
import torch
from helpers import tiny_controlnet

from latentdiff.families.clip import Embeddings
from latentdiff.families.control import ControlNetResiduals
from latentdiff.models.assemble import load_components
from latentdiff.sampling.model_call import guided


@pytest.fixture(scope="module")
def net(tiny_sd1):
    return tiny_controlnet(load_components(tiny_sd1).unet, 4, seed=1)


def _batch(rows: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, 16, 16, generator=g)
    context = Embeddings(torch.randn(rows, 77, 32, generator=g))
    return x, torch.tensor(500), context


@pytest.mark.parametrize("mode", ["balanced", "prompt", "control", "guess"])
def test_modes_scale_and_mask_as_their_tools_do(net, mode):
    x, t, ctx = _batch(4)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    inputs = guided(ctx[2:], ctx[:2])
    unit = ControlNetResiduals(net, image, scale=0.7, mode=mode)
    got = unit(x, t, inputs)
    plain_down, plain_mid = net(
        x,
        t,
        encoder_hidden_states=ctx.hidden,
        controlnet_cond=image.repeat(4, 1, 1, 1),
        conditioning_scale=1.0,
        return_dict=False,
    )
    outputs = [*plain_down, plain_mid]
    if mode == "guess":
        d, m = net(
            x[2:],
            t,
            encoder_hidden_states=ctx.hidden[2:],
            controlnet_cond=image.repeat(2, 1, 1, 1),
            conditioning_scale=0.7,
            guess_mode=True,
            return_dict=False,
        )
        want = [torch.cat([torch.zeros_like(r), r]) for r in [*d, m]]
    else:
        scales = [0.7] * len(outputs) if mode == "balanced" else [0.7 * 0.825 ** (12 - i) for i in range(13)]
        want = [o * s for o, s in zip(outputs, scales)]
        if mode == "control":
            want = [torch.cat([torch.zeros_like(w[:2]), w[2:]]) for w in want]
    for a, b in zip([*got.down, got.mid], want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got.mid.abs().max() > 0


def test_inactive_steps_add_nothing(net):
    x, t, ctx = _batch(1)
    unit = ControlNetResiduals(net, torch.rand(1, 3, 64, 64), start=0.25, end=0.75, total=4)
    inputs = guided(ctx, None)
    assert [unit(x, t, inputs.at(i)) is None for i in range(4)] == [
        True,
        False,
        False,
        True,
    ]  # diffusers: active while i/n >= start and (i+1)/n <= end


def test_adapter_features_are_checked_against_the_unets_blocks():
    """A T2I-Adapter made for SD's layout (attention in the first block) on a UNet whose first blocks
    have none: one line naming both shapes, not a tensor-size error inside the UNet."""
    import pytest

    from latentdiff.errors import UsageError
    from latentdiff.families.control import check_adapter_fits, intrablock_shapes

    sd = {"down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "block_out_channels": [8, 16, 32, 32]}
    assert intrablock_shapes(sd, 8, 6) == [(8, 8, 6), (16, 4, 3), (32, 2, 2), (32, 1, 1)]
    check_adapter_fits([torch.zeros(1, *s) for s in intrablock_shapes(sd, 8, 6)], sd, 8, 6)
    other = {
        "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
        "block_out_channels": [8, 8, 16],
    }
    with pytest.raises(UsageError, match="do not fit this model's UNet blocks") as e:
        check_adapter_fits(
            [torch.zeros(1, 8, 16, 16), torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4)], other, 16, 16
        )
    assert "\n" not in str(e.value)
