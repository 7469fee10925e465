"""A1111's noise sources and seed rules (latentdiff/sampling/noise_a1111.py).

Test vectors, and where they come from:
- Philox4x32-10 known answers: Random123's kat_vectors file (D. E. Shaw Research; Salmon et al. 2011),
  the counters/keys 0, all ones, and the digits of pi.
- CUDA `torch.manual_seed(0); torch.randn(3, 4, device="cuda")`, eight decimals: the docstring of
  AUTOMATIC1111's modules/rng_philox.py ("Expected output"), quoted again by the MIT C port
  aagdev/mlimgsynth (its Philox test utility prints the same numbers).
- CUDA seed 0, an 8 x 8 `torch.randn(..., device="cuda")`, four decimals as torch prints them: the
  printed input tensor of kapilsh/cuda-mode-lecture's README (its fused add-mul-relu section); its
  first twelve values are the twelve above, i.e. the same seed-0 stream.
"""

import numpy as np
import pytest
import torch

from latentdiff.errors import UsageError
from latentdiff.sampling.noise_a1111 import (
    ImageNoise,
    NoiseSettings,
    Philox,
    check_rng,
    image_seeds,
    paste_centred,
    philox4x32_10,
    slerp,
)

KAT = [  # (counter, key, result)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
CUDA_SEED0_3x4 = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]
CUDA_SEED0_8x8 = [
    [-0.9247, -0.4253, -2.6438, 0.1452, -0.1209, -0.5797, -0.6229, -0.3284],
    [-1.0745, -0.3631, -1.6711, 2.2655, 0.3117, -0.1842, 1.2866, 1.1820],
    [-0.1271, 1.2169, 1.4353, 1.0605, -0.4941, -1.4244, -0.7244, -1.2973],
    [0.0697, -0.0074, 1.8969, 0.6878, -0.0779, -0.8373, 1.3506, -0.2879],
    [-0.5965, -0.3283, -0.9086, -0.8059, -0.7407, -0.0504, 0.5435, 1.5150],
    [0.0141, 0.4532, 1.6349, 0.7124, -0.1806, 1.0252, -1.4622, -0.7554],
    [-0.1836, 0.3824, 0.3918, -0.0830, 0.8971, -1.1123, 0.1116, 0.4863],
    [-0.5499, -0.3231, -0.5469, 0.9049, 0.2837, 0.1210, 0.4730, -1.0823],
]
SHAPE = (4, 8, 8)


@pytest.mark.parametrize("counter,key,want", KAT)
def test_philox_known_answers(counter, key, want):
    out = philox4x32_10([np.array([c], dtype=np.uint32) for c in counter], key)
    assert tuple(int(o[0]) for o in out) == want


def test_nv_gives_cuda_randn():
    # float32 on CUDA vs Box-Muller taken in float64 here: a few float32 ulps apart, not more
    assert np.abs(Philox(0).randn((3, 4)).numpy() - np.array(CUDA_SEED0_3x4)).max() < 1e-6
    assert np.abs(Philox(0).randn((8, 8)).numpy() - np.array(CUDA_SEED0_8x8)).max() <= 0.5e-4 + 1e-6


def test_nv_next_call_and_other_seeds_differ():
    g = Philox(0)
    first, second = g.randn((16,)), g.randn((16,))
    assert not torch.equal(first, second) and torch.equal(Philox(0).randn((16,)), first)
    assert not torch.equal(Philox(1).randn((16,)), first)
    assert not torch.equal(Philox(2**32).randn((16,)), first)  # the key's high word counts


@pytest.mark.gpu
def test_nv_equals_cuda_on_this_gpu():
    for seed in (0, 1, 12345, 2**32 + 7):
        torch.manual_seed(seed)
        a, b = torch.randn(2, 4, 16, 16, device="cuda").cpu(), torch.randn(7, device="cuda").cpu()
        g = Philox(seed)
        assert (g.randn((2, 4, 16, 16)) - a).abs().max() < 1e-5
        assert (g.randn((7,)) - b).abs().max() < 1e-5


def _noise(seeds, subseeds=None, **settings):
    return ImageNoise(SHAPE, seeds, subseeds, NoiseSettings(**settings), "cpu")


@pytest.mark.parametrize("rng", ["cpu", "nv"])
def test_first_noise_is_each_seeds_own(rng):
    noise = _noise([5, 6], rng=rng).first()
    for k, seed in enumerate((5, 6)):
        own = (
            torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
            if rng == "cpu"
            else Philox(seed).randn(SHAPE)
        )
        assert torch.equal(noise[k], own)
    assert torch.equal(_noise([6], rng=rng).first()[0], noise[1])  # not the batch's


def test_sampler_noise_continues_the_generator_or_takes_ensd():
    n = _noise([5], rng="nv")
    n.first()
    g = Philox(5)
    g.randn(SHAPE)
    assert torch.equal(n.next()[0], g.randn(SHAPE))
    e = _noise([5], rng="nv", ensd=31337)
    e.first()
    assert torch.equal(e.next()[0], Philox(5 + 31337).randn(SHAPE))


def test_variation_strength_ends():
    plain = _noise([5]).first()
    assert torch.equal(_noise([5], [9], variation_strength=0.0).first(), plain)
    full = _noise([5], [9], variation_strength=1.0).first()[0]
    assert torch.allclose(full, torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)), atol=1e-5)
    half = _noise([5], [9], variation_strength=0.5).first()[0]
    assert not torch.allclose(half, plain[0]) and not torch.allclose(half, full)


def test_slerp_of_a_noise_with_itself_is_a1111s_linear_rule():
    x = torch.randn(SHAPE)
    assert torch.allclose(slerp(0.3, x, x), x)


def test_seed_resize_rules():
    assert torch.equal(_noise([5], resize_from=(64, 64)).first(), _noise([5]).first())  # same size: no-op
    small = _noise([5], resize_from=(32, 48)).first()[0]  # (w, h) pixels -> (4, 6, 4) latents, centred
    assert torch.equal(small[:, 1:7, 2:6], torch.randn((4, 6, 4), generator=torch.Generator().manual_seed(5)))
    big = torch.arange(2 * 6 * 6.0).reshape(2, 6, 6)
    assert torch.equal(paste_centred(big, torch.zeros(2, 4, 4)), big[:, 1:5, 1:5])


def test_seed_numbering():
    assert image_seeds(10, 3) == ([10, 11, 12], None)
    assert image_seeds(10, 3, 7, 0.0) == ([10, 11, 12], [7, 8, 9])
    assert image_seeds(10, 3, 7, 0.5) == ([10, 10, 10], [7, 8, 9])


def test_rng_names():
    assert check_rng("NV") == "nv" and check_rng(" cpu ") == "cpu"
    with pytest.raises(UsageError, match="unknown rng 'tpu'; choose one of: cpu, gpu, nv"):
        check_rng("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="'nv' gives the same numbers"):
            check_rng("gpu")
