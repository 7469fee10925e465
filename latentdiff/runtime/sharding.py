"""Splitting a `generate` run across processes started by `accelerate launch` (or torchrun).

Every process reads the same prompts and takes one contiguous share of the run's images, in the
order a single process would make them, so the files (names, seeds, pixels) are those one process
writes. Nothing here imports accelerate or torch.distributed unless several processes are running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    """Images `first .. first + count - 1` of one prompt (image k uses seed + k)."""

    prompt: str
    first: int
    count: int


def world() -> tuple[int, int]:
    """(rank, number of processes) from the launcher's environment; (0, 1) when run alone."""
    try:
        return int(os.environ.get("RANK", "0")), max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 0, 1


def my_shares(prompts: list[str], num_images: int, rank: int, size: int) -> list[Share]:
    """Process `rank`'s contiguous part of the (prompt, image) jobs, grouped into runs per prompt."""
    jobs = [(i, k) for i in range(len(prompts)) for k in range(num_images)]
    mine = jobs[rank * len(jobs) // size : (rank + 1) * len(jobs) // size]
    shares: list[Share] = []
    for i, k in mine:
        last = shares[-1] if shares else None
        if last is not None and last.prompt is prompts[i] and last.first + last.count == k:
            shares[-1] = Share(last.prompt, last.first, last.count + 1)
        else:
            shares.append(Share(prompts[i], k, 1))
    return shares


def agree(value, device: str):
    """Rank 0's `value` in every process, and the device this process should use (`device`, or
    for "auto" the launcher's local device, e.g. cuda:LOCAL_RANK). Starts the process group."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0], (str(state.device) if (device or "auto") == "auto" else device)
