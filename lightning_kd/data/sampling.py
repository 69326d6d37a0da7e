"""EpochShuffleSampler: a shuffle that is a pure function of (seed, epoch), so a resumed run sees the same order."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler


class EpochShuffleSampler(RandomSampler):
    """Random order of ``range(len(data_source))`` drawn from a generator seeded by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every epoch (it does so for any sampler that has it), so
    epoch ``e`` always sees the same permutation: a run resumed from a checkpoint at the end of epoch ``e - 1``
    trains on exactly the batches an uninterrupted run would. A plain ``shuffle=True`` draws its order from the
    global generator, whose state a checkpoint does not hold. It subclasses ``RandomSampler``, so under DDP
    Lightning still recognises it as shuffling and replaces it by a ``DistributedSampler``.

    Args:
        data_source: the dataset (only its length is used).
        seed: the base seed; ``None`` takes ``torch.initial_seed()`` when the loader is built (the seed
            ``seed_everything`` set).

    Example:
        >>> s = EpochShuffleSampler(range(5), seed=0); s.set_epoch(3)
        >>> list(s) == list(EpochShuffleSampler(range(5), seed=0).with_epoch(3))
        True
    """

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def with_epoch(self, epoch: int) -> EpochShuffleSampler:
        """``self`` set to ``epoch`` (for chaining)."""
        self.set_epoch(epoch)
        return self

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.data_source)
