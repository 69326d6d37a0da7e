"""Training batches for data-free distillation: noise and class labels, never a real training sample.

:class:`DataFreeDataModule` yields ``(z, y)``: latent vectors ``z`` (a generator's input) and class labels ``y``
drawn uniformly (the targets a DeepInversion synthesiser optimises its images towards). Batch ``b`` of epoch ``e``
is drawn from a generator seeded by ``(seed, rank, e, b)``: fresh noise every epoch (as DAFL and ZSKT sample it),
the same noise for the same run (the sampler reads the Trainer's epoch), so a run resumed at an epoch boundary
continues exactly. Validation and test — when the recipe has real data for them — are those of the
``evaluate_on`` data module, whose training loader is never asked for: the student trains on synthetic batches
only.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class NoiseBatches(Dataset):
    """Item ``(epoch, b)``: the batch ``(z (batch_size, latent_dim), y (batch_size,))`` of that epoch."""

    def __init__(self, batch_size: int, latent_dim: int, num_classes: int, seed: int, rank: int = 0) -> None:
        self.batch_size, self.latent_dim, self.num_classes = batch_size, latent_dim, num_classes
        self.seed, self.rank = seed, rank

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, b = key
        state = np.random.SeedSequence([self.seed, self.rank, epoch, b]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        z = torch.randn(self.batch_size, self.latent_dim, generator=generator)
        return z, torch.randint(0, self.num_classes, (self.batch_size,), generator=generator)


class EpochBatches(Sampler):
    """``(epoch, 0) … (epoch, n − 1)``: the epoch is the Trainer's when ``trainer`` is given (read when the
    epoch's iterator is made, so a resumed run draws the epoch it resumes at), else the one :meth:`set_epoch` set."""

    def __init__(self, n: int, trainer: Any = None) -> None:
        self.n, self.epoch, self.trainer = n, 0, trainer

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else self.epoch
        return iter([(epoch, b) for b in range(self.n)])

    def __len__(self) -> int:
        return self.n


class DataFreeDataModule(L.LightningDataModule):
    """Noise batches for training, real batches (optional) for validation and test.

    Args:
        evaluate_on: a data module whose ``val_dataloader``/``test_dataloader`` score the student on real data
            (e.g. ``DigitsDataModule``); ``None``: no validation or test.
        latent_dim: length of each noise vector (the generator's ``latent_dim``).
        num_classes: classes the labels ``y`` are drawn from.
        batch_size: synthetic samples per training step.
        steps_per_epoch: training steps per epoch (``steps_per_epoch · batch_size`` noise vectors in all).
        seed: seed of the noise and the labels.

    Example:
        >>> dm = DataFreeDataModule(latent_dim=16, num_classes=10, batch_size=4, steps_per_epoch=2)
        >>> dm.setup("fit")
        >>> z, y = next(iter(dm.train_dataloader()))
        >>> tuple(z.shape), tuple(y.shape), bool((y >= 0).all() and (y < 10).all())
        ((4, 16), (4,), True)
    """

    def __init__(
        self,
        evaluate_on: L.LightningDataModule | None = None,
        latent_dim: int = 100,
        num_classes: int = 10,
        batch_size: int = 128,
        steps_per_epoch: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("num_classes", num_classes), ("batch_size", batch_size),
                            ("steps_per_epoch", steps_per_epoch)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DataFreeDataModule: {name} must be a positive int, got {value!r}.")
        self.evaluate_on = evaluate_on
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
        self.noise: NoiseBatches | None = None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return getattr(self.evaluate_on, "class_names", None)

    def prepare_data(self) -> None:
        if self.evaluate_on is not None:
            self.evaluate_on.prepare_data()

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.noise is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0  # each rank its own noise
            self.noise = NoiseBatches(self.batch_size, self.latent_dim, self.num_classes, self.seed, rank)
        if self.evaluate_on is not None:
            self.evaluate_on.trainer = self.trainer
            self.evaluate_on.setup(stage)

    def train_dataloader(self) -> DataLoader:
        if self.noise is None:
            self.setup("fit")
        return DataLoader(self.noise, sampler=EpochBatches(self.steps_per_epoch, self.trainer), batch_size=None)

    def _real(self, split: str) -> Any:
        if self.evaluate_on is None:
            return []  # Lightning skips an empty loader list: no real data, no validation
        return getattr(self.evaluate_on, f"{split}_dataloader")()

    def val_dataloader(self) -> Any:
        return self._real("val")

    def test_dataloader(self) -> Any:
        if self.evaluate_on is None:
            raise ValueError(
                "DataFreeDataModule has no test data: set evaluate_on to a data module with a test split "
                "(e.g. lightning_kd.data.DigitsDataModule) to score the student on real images."
            )
        return self._real("test")
