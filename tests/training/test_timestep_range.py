"""finetune --min-timestep/--max-timestep (kohya's): DDPM training draws t only in [min, max)."""

from types import SimpleNamespace

import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.families.clip import Embeddings
from latentdiff.training.config import FinetuneConfig
from latentdiff.training.objective import diffusion_loss


class Recorder(torch.nn.Module):
    """A stand-in UNet that keeps the timesteps it is called with."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, sample, t, **kwargs):
        self.seen.append(t.clone())
        return SimpleNamespace(sample=sample * self.w)


def _draws(timesteps, n=64):
    from diffusers import DDPMScheduler

    unet, g = Recorder(), torch.Generator().manual_seed(0)
    x0, ctx = torch.zeros((n, 4, 2, 2)), Embeddings(torch.zeros((n, 3, 8)))
    diffusion_loss(unet, DDPMScheduler(num_train_timesteps=1000), x0, ctx, g, timesteps=timesteps)
    return unet.seen[0]


def test_timesteps_are_drawn_in_the_range_and_the_whole_schedule_by_default():
    t = _draws((900, 1000))
    assert t.min() >= 900 and t.max() <= 999 and len(set(t.tolist())) > 20
    whole = _draws(None)
    assert whole.min() < 900 and whole.max() < 1000
    assert torch.equal(_draws((0, 1000)), whole)  # the default range draws the same numbers


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"min_timestep": -1}, "--min-timestep -1 must be >= 0"),
        ({"min_timestep": 500, "max_timestep": 500}, "below --max-timestep 500"),
        ({"max_timestep": 20_000}, "--max-timestep"),
    ],
)
def test_bad_ranges_are_one_line(kw, words):
    with pytest.raises(UsageError, match=words) as e:
        FinetuneConfig(dataset="d", model="m", out="o", **kw)
    assert "\n" not in str(e.value)
