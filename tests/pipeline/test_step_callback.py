"""Pipeline's per-step callback: progress, the latents of each step, and stopping by raising."""

import pytest
import torch

from latentdiff.errors import Cancelled


def test_callback_sees_every_step_and_does_not_change_the_image(pipe_sd1):
    seen = []
    kw = dict(steps=4, width=32, height=32, seed=3, num_images=2)
    images = pipe_sd1("red apple", callback=lambda s, n, z: seen.append((s, n, tuple(z.shape), z.clone())), **kw)
    total = seen[0][1]
    assert [s for s, *_ in seen] == list(range(1, total + 1)) and total >= 4
    assert seen[0][2] == (2, 4, 8, 8)
    assert not torch.equal(seen[0][3], seen[-1][3])
    plain = pipe_sd1("red apple", **kw)
    assert [im.tobytes() for im in images] == [im.tobytes() for im in plain]


def test_raising_from_the_callback_stops_at_that_step(pipe_sd1):
    steps = []

    def stop_at_two(step, total, latents):
        steps.append(step)
        if step == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        pipe_sd1("red apple", steps=10, width=32, height=32, callback=stop_at_two)
    assert steps == [1, 2]
