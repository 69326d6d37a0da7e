"""Each DDP rank trains on its own block of the training sequences, so it reads only its block of an offline
teacher store (:class:`~lightning_kd.cache.CachedLMTeacher` opens just those rows of the memory-mapped arrays).

With Lightning's own ``DistributedSampler`` every rank draws from the whole training split each epoch (a global
shuffle dealt out rank by rank), so every rank touches every row of a store over an epoch. With
``rank_shards: true`` on :class:`~lightning_kd.data.PackedTextDataModule`, rank ``r`` of ``W`` owns the contiguous
rows ``[r·⌊N/W⌋, (r+1)·⌊N/W⌋)`` (:func:`rank_rows`; the last ``N mod W`` rows are left out so every rank has the
same number of steps, as ``DistributedSampler(drop_last=True)`` does) and shuffles them, per epoch, from
``(seed, epoch)``. Every rank still sees a different sample; what changes is that a given sequence always trains
on the same rank — the data order WebDataset-style shards give. It is a ``DistributedSampler``, so Lightning
keeps it (it only swaps in its own for other samplers). A run resumed mid-epoch skips, per rank, the samples that
rank had processed (:mod:`lightning_kd.data.resume`), so the resumed batches are the ones an uninterrupted run
would have had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch.utils.data import DistributedSampler


def rank_rows(num_rows: int, world_size: int, rank: int) -> range:
    """The training rows rank ``rank`` of ``world_size`` owns.

    Example:
        >>> rank_rows(10, 3, 0), rank_rows(10, 3, 2)
        (range(0, 3), range(6, 9))
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of the {world_size} ranks.")
    per = num_rows // world_size
    if per == 0:
        raise ValueError(
            f"{num_rows} training sequences cannot be shared among {world_size} ranks (each needs at least one): use "
            "more data or fewer devices."
        )
    return range(rank * per, (rank + 1) * per)


class RankShardSampler(DistributedSampler):
    """Rank ``rank``'s own rows (:func:`rank_rows`), in an order drawn from ``(seed, epoch)``.

    Args:
        data_source: the training split (its length).
        num_replicas, rank: the world size and this process's global rank.
        seed: the shuffle's base seed.
        start: ``epoch -> samples to skip`` at the start of that epoch's order (a resumed run's position).

    Example:
        >>> s = RankShardSampler(range(10), num_replicas=2, rank=1, seed=0); s.set_epoch(0)
        >>> sorted(s) == list(range(5, 10)), len(s)
        (True, 5)
    """

    def __init__(
        self, data_source: Sized, num_replicas: int, rank: int, seed: int = 0,
        start: Callable[[int], int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.rows = rank_rows(len(data_source), num_replicas, rank)
        self.num_samples, self.total_size = len(self.rows), len(self.rows) * num_replicas
        self.start = start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((int(self.seed) * 1_000_003 + int(self.epoch)) % (2**63))
        order = torch.randperm(len(self.rows), generator=generator)
        skip = self.start(self.epoch) if self.start is not None else 0
        yield from (order[skip:] + self.rows.start).tolist()

    def __len__(self) -> int:
        return len(self.rows)
