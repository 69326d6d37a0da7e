"""scikit-learn's bundled 8×8 handwritten digits: the embedded default data set (no download)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kd.data.base import InMemoryDataModule


class DigitsDataModule(InMemoryDataModule):
    """1,797 8×8 grey digits (UCI optdigits as shipped by scikit-learn), 10 classes, as ``(N, 1, 8, 8)``.

    A fixed, seeded, stratified split: the same ``seed`` always gives the same train/val/test samples, so
    teacher, student and baseline are compared on identical data.

    Args:
        batch_size: samples per batch.
        val_fraction: share of samples for validation.
        test_fraction: share of samples for the test set.
        seed: seed of the split (not of training).
        num_workers: DataLoader workers.
        with_indices: training batches also carry sample indices (for CRD).
        augment: random 1-pixel crop + no flip (digits are not mirror-symmetric).
        augment_seed: replayable augmentation: each sample's crop and flip derive from ``(augment_seed,
            epoch, index)`` (needs ``with_indices``), as an offline teacher cache requires. ``None``: random.
        resident: keep the data on the accelerator during fit (one on-device gather per batch, no per-step
            host copy); needs ``num_workers=0``.

    Example:
        >>> dm = DigitsDataModule(); dm.setup()
        >>> [len(dm.splits[s]) for s in ("train", "val", "test")]
        [1258, 180, 359]
    """

    mean = 0.3053  # pixel mean / std of the whole set, in [0, 1] units (values 0..16 divided by 16)
    std = 0.3760

    def __init__(
        self,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
        with_indices: bool = False,
        augment_seed: int | None = None,
        resident: bool = False,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            augment,
            crop_padding=1,
            flip=False,
            with_indices=with_indices,
            augment_seed=augment_seed,
            resident=resident,
        )
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) and sum < 1."
            )
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        x = torch.as_tensor(data.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
        y = torch.as_tensor(data.target, dtype=torch.int64)
        idx = torch.arange(len(y)).numpy()
        n_test = round(self.test_fraction * len(y))
        n_val = round(self.val_fraction * len(y))
        rest, test = train_test_split(idx, test_size=n_test, random_state=self.seed, stratify=data.target)
        train, val = train_test_split(rest, test_size=n_val, random_state=self.seed, stratify=data.target[rest])
        return {name: (x[ix], y[ix]) for name, ix in (("train", train), ("val", val), ("test", test))}
