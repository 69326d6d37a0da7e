"""scikit-learn's bundled 8×8 handwritten digits: the embedded default data set (no download)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from lightning_kd.data.base import InMemoryDataModule

NUM_SAMPLES, NUM_CLASSES = 1797, 10  # scikit-learn's digits


def split_sizes(n: int, num_classes: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """The validation and test sizes of a stratified split of ``n`` samples of ``num_classes`` classes.

    Checked before scikit-learn sees them, so a bad fraction is named with the value that works.

    Raises:
        ValueError: a fraction is not a number in (0, 1) (NaN included), they sum to 1 or more, or a split
            would get fewer samples than there are classes (a stratified split gives each class one at least).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:  # NaN fails too
            raise ValueError(
                f"{name}={value!r} must be a number in (0, 1): the share of the {n} samples it holds out; "
                f"e.g. {name}=0.1."
            )
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} sum to {val_fraction + test_fraction:g}, "
            "leaving nothing to train on; make them sum to less than 1 (e.g. 0.1 and 0.2)."
        )
    smallest = math.ceil(num_classes / n * 1000) / 1000
    sizes = {"val_fraction": round(val_fraction * n), "test_fraction": round(test_fraction * n)}
    for name, value, split in (("val_fraction", val_fraction, "validation"), ("test_fraction", test_fraction, "test")):
        if sizes[name] < num_classes:
            raise ValueError(
                f"{name}={value} gives {sizes[name]} {split} samples (of {n}), fewer than the {num_classes} classes: a "
                f"stratified split needs at least one sample of each class; use {name} >= {smallest}."
            )
    n_train = n - sizes["val_fraction"] - sizes["test_fraction"]
    if n_train < num_classes:
        largest = math.floor((n - num_classes - 1) / n * 1000) / 1000
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave {n_train} of the {n} samples for "
            f"training, fewer than the {num_classes} classes; make them sum to at most {largest}."
        )
    return sizes["val_fraction"], sizes["test_fraction"]


class DigitsDataModule(InMemoryDataModule):
    """1,797 8×8 grey digits (UCI optdigits as shipped by scikit-learn), 10 classes, as ``(N, 1, 8, 8)``.

    A fixed, seeded, stratified split: the same ``seed`` always gives the same train/val/test samples, so
    teacher, student and baseline are compared on identical data.

    Args:
        batch_size: samples per batch.
        val_fraction: share of samples for validation, in (0, 1); at least one sample per class (>= 0.006).
        test_fraction: share of samples for the test set, likewise; the two sum to less than 1.
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

    class_names: tuple[str, ...] | None = tuple(str(i) for i in range(10))

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
        split_sizes(NUM_SAMPLES, NUM_CLASSES, val_fraction, test_fraction)  # fail at construction
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        x = torch.as_tensor(data.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
        y = torch.as_tensor(data.target, dtype=torch.int64)
        idx = torch.arange(len(y)).numpy()
        n_val, n_test = split_sizes(len(y), len(set(data.target.tolist())), self.val_fraction, self.test_fraction)
        rest, test = train_test_split(idx, test_size=n_test, random_state=self.seed, stratify=data.target)
        train, val = train_test_split(rest, test_size=n_val, random_state=self.seed, stratify=data.target[rest])
        return {name: (x[ix], y[ix]) for name, ix in (("train", train), ("val", val), ("test", test))}
