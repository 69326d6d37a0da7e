"""Training orders that a checkpoint can continue: a shuffle that is a pure function of (seed, epoch), started at
the sample a resumed run has reached."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import torch
from torch import Tensor
from torch.utils.data import RandomSampler


class EpochShuffleSampler(RandomSampler):
    """Random order of ``range(len(data_source))`` drawn from a generator seeded by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every epoch (it does so for any sampler that has it), so
    epoch ``e`` always sees the same permutation (a loop that iterates the loader again without ``set_epoch`` gets
    the next epoch's): a run resumed from a checkpoint at the end of epoch ``e - 1``
    trains on exactly the batches an uninterrupted run would; ``start`` (given by a resumable data module, see
    :mod:`lightning_kd.data.resume`) makes a run resumed in the middle of epoch ``e`` begin at the sample it had
    reached. A plain ``shuffle=True`` draws its order from the global generator, whose state a checkpoint does not
    hold. It subclasses ``RandomSampler``, so under DDP Lightning still recognises it as shuffling and replaces it
    by a ``DistributedSampler``.

    Args:
        data_source: the dataset (only its length is used).
        seed: the base seed; ``None`` takes ``torch.initial_seed()`` when the loader is built (the seed
            ``seed_everything`` set).
        start: ``epoch -> samples to skip`` at the start of that epoch's order (``None``: none).

    Example:
        >>> s = EpochShuffleSampler(range(5), seed=0); s.set_epoch(3)
        >>> list(s) == list(EpochShuffleSampler(range(5), seed=0).with_epoch(3))
        True
        >>> list(EpochShuffleSampler(range(5), seed=0, start=lambda e: 2).with_epoch(3)) == list(s.with_epoch(3))[2:]
        True
    """

    def __init__(self, data_source: Sized, seed: int | None = None, start: Callable[[int], int] | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.epoch = 0
        self.start = start
        self._epoch_given, self._iterated = False, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_given = True

    def with_epoch(self, epoch: int) -> EpochShuffleSampler:
        """``self`` set to ``epoch`` (for chaining)."""
        self.set_epoch(epoch)
        return self

    def permutation(self, epoch: int) -> Tensor:
        """The whole order of ``epoch``."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(len(self.data_source), generator=generator)

    def __iter__(self) -> Iterator[int]:
        if self._iterated and not self._epoch_given:  # iterated again without set_epoch (outside Lightning): next
            self.epoch += 1
        self._iterated, self._epoch_given = True, False
        skip = self.start(self.epoch) if self.start is not None else 0
        yield from self.permutation(self.epoch)[skip:].tolist()

    def __len__(self) -> int:
        return len(self.data_source)


class ReplayShuffleSampler(EpochShuffleSampler):
    """The orders ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))`` gives epoch after
    epoch (``num_workers=0``), recomputed for any epoch from the seed alone: a resumed run sees the order an
    uninterrupted one does, and runs made before resuming was possible keep their batches.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> loader = DataLoader(range(6), batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(3))
        >>> orders = [list(loader) for _ in range(3)]
        >>> orders == [list(ReplayShuffleSampler(range(6), seed=3).with_epoch(e)) for e in range(3)]
        True
    """

    def permutation(self, epoch: int) -> Tensor:
        n = len(self.data_source)
        generator = torch.Generator().manual_seed(self.seed)
        # per (complete) epoch a DataLoader draws its workers' base seed, then RandomSampler one permutation that it
        # yields and one it slices to nothing (num_samples % n == 0)
        for _ in range(epoch):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            torch.randperm(n, generator=generator)
            torch.randperm(n, generator=generator)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return torch.randperm(n, generator=generator)
