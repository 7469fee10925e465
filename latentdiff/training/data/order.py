"""The batch order of a fine-tuning run: a pure function of the position in the run."""

from __future__ import annotations

import random


class DataOrder:
    """Which dataset indices each (step, micro-step, process) trains on: a pure function of the
    position, so a resumed run sees exactly the batches an uninterrupted one would have.

    Each epoch is a list of global batches (a shuffled permutation cut into chunks, or
    same-bucket batches); epoch e's shuffle is seeded by (seed, e). Index i appears `repeats[i]`
    times an epoch (kohya's repeats; all once without them).
    """

    def __init__(
        self, n: int, global_batch: int, seed: int, bucket_of: list | None = None, repeats: list[int] | None = None
    ):
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.bucket_of = bucket_of
        self.repeats = repeats or [1] * n
        self._cache: dict[int, list[list[int]]] = {}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            rng = random.Random(f"{self.seed}/{epoch}")
            if self.bucket_of is None:
                order = [i for i in range(self.n) for _ in range(self.repeats[i])]
                rng.shuffle(order)
                groups = [order]
            else:
                by_bucket: dict = {}
                for i, b in enumerate(self.bucket_of):
                    by_bucket.setdefault(b, []).extend([i] * self.repeats[i])
                groups = [by_bucket[b] for b in sorted(by_bucket)]
                for g in groups:
                    rng.shuffle(g)
            batches = [g[i : i + self.global_batch] for g in groups for i in range(0, len(g), self.global_batch)]
            rng.shuffle(batches)
            self._cache = {epoch: batches}  # only the current epoch is ever needed again
        return self._cache[epoch]

    def batch(self, position: int, rank: int = 0, world: int = 1) -> tuple[int, list[int]]:
        """(epoch, this process's indices) for the position-th global batch of the run."""
        epoch, index = divmod(position, len(self.epoch_batches(0)))
        full = self.epoch_batches(epoch)[index]
        share = -(-len(full) // world)
        mine = full[rank * share : (rank + 1) * share]
        return epoch, mine or full[-1:]  # a short last batch still gives every process work


def run_order(cfg, processes: int, records: list, bucket_of: list | None = None) -> DataOrder:
    """A finetune run's data order: its batch size over `processes`, seed, repeats and (when
    bucketing) each record's aspect bucket."""
    return DataOrder(len(records), cfg.batch_size * processes, cfg.seed, bucket_of, [r.repeats for r in records])
