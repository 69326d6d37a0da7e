"""In-memory image classification data: whole splits as tensors, batches sliced, augmentation per batch.

Small benchmark datasets (digits, Fashion-MNIST, CIFAR) fit in memory many times over. Keeping them as one
tensor each removes per-sample Python from the input pipeline: a batch is one indexing op, and the
augmentation runs batched after the batch reached its device (``on_after_batch_transfer``).
"""

from __future__ import annotations

import numbers
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_kd.core.data_checks import check_finite_inputs, class_indices
from lightning_kd.data.augment import apply_crop_flip, crop_flip_params, random_crop_flip
from lightning_kd.data.fingerprint import dataset_fingerprint
from lightning_kd.data.resume import PositionedLoader, ResumableData
from lightning_kd.data.sampling import EpochShuffleSampler
from lightning_kd.data.with_index import IndexedDataset


class TensorClassificationDataset(Dataset):
    """``(images, labels)`` tensors; fetches whole batches at once through ``__getitems__``."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        if idx.device != self.labels.device:
            # resident data: index where it lives. An async copy from pageable memory is staged before it
            # returns (safe to free), and unlike a blocking copy it does not wait for the device's queue.
            idx = idx.to(self.labels.device, non_blocking=True)
        return self.images[idx], self.labels[idx]

    def to(self, device: torch.device | str) -> TensorClassificationDataset:
        """The same samples on ``device`` (the tensors themselves when they are already there)."""
        return TensorClassificationDataset(self.images.to(device), self.labels.to(device))


def _check_count(name: str, value: Any, least: int, hint: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a whole number (not a bool) ``>= least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}; {hint}.")


def _keep_batch(batch: Any) -> Any:
    """Collate for :class:`TensorClassificationDataset`: ``__getitems__`` already returns the batch."""
    return batch


class InMemoryDataModule(ResumableData, L.LightningDataModule):
    """Base for data modules whose splits are tensors. Subclasses implement :meth:`load_splits`.

    Args:
        batch_size: samples per batch (training drops the last incomplete batch).
        num_workers: DataLoader workers (0 is fastest for in-memory tensors).
        augment: random crop + horizontal flip on training batches.
        crop_padding: padding of the random crop.
        flip: horizontal flip in the augmentation.
        with_indices: training batches are ``(images, labels, indices)`` — the sample indices CRD's memory
            bank needs.
        augment_seed: make the augmentation replayable: sample ``i`` in epoch ``e`` gets the crop and flip
            :func:`~lightning_kd.data.augment.crop_flip_params` derives from ``(augment_seed, e, i)`` instead
            of the global random generator (needs ``with_indices``). An offline teacher cache
            (:mod:`lightning_kd.cache`) needs it to store the teacher's logits of the very view the student
            sees. ``None``: global RNG.
        resident: keep the splits on the accelerator: ``setup`` under a Trainer moves them to its root device
            and each batch is one gather there, with no host-to-device copy per step (needs
            ``num_workers=0``; the whole data set must fit in device memory). Without a Trainer they stay
            on the CPU.

    The training order is a function of ``(seed, epoch)`` (the seed ``seed_everything`` set), and checkpoints hold
    the position in it (:mod:`lightning_kd.data.resume`): a run resumed mid-epoch sees the batches an uninterrupted
    run would.
    """

    #: one name per class (reports and ``deploy.json`` label their outputs with them); ``None``: unknown
    class_names: tuple[str, ...] | None = None

    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        augment: bool = False,
        crop_padding: int = 2,
        flip: bool = True,
        with_indices: bool = False,
        augment_seed: int | None = None,
        resident: bool = False,
    ) -> None:
        super().__init__()
        _check_count("batch_size", batch_size, 1, "e.g. batch_size=128")
        _check_count("num_workers", num_workers, 0, "0 is fastest for in-memory data")
        _check_count("crop_padding", crop_padding, 0, "the pixels of zero padding around the random crop, e.g. 2")
        if augment_seed is not None and not with_indices:
            raise ValueError(
                f"augment_seed={augment_seed} derives each sample's augmentation from its index: set "
                "with_indices=True as well."
            )
        if resident and num_workers:
            raise ValueError(
                f"resident=True keeps the data on the accelerator, where DataLoader workers cannot index it: "
                f"set num_workers=0 (got {num_workers})."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.crop_padding = crop_padding
        self.flip = flip
        self.with_indices = with_indices
        self.augment_seed = augment_seed
        self.resident = resident
        self.splits: dict[str, TensorClassificationDataset] = {}

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Return ``{"train"|"val"|"test": (images uint8/float (N, C, H, W), labels int64 (N,))}``.

        ``setup`` refuses, naming the split, images holding NaN or infinity and labels that are not class indices
        (float labels are accepted only as whole numbers: ``2.5`` is refused, not cut to ``2``)."""
        raise NotImplementedError

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 ``[0, 255]`` → float, standardised with the class's ``mean``/``std``."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        mean = torch.as_tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            for name, (images, labels) in self.load_splits().items():
                where = f"the {name} split of {type(self).__name__}"
                images = self.normalize(images)
                check_finite_inputs(images, where)  # once, at load: a NaN pixel is a data fault, not divergence
                self.splits[name] = TensorClassificationDataset(images, class_indices(labels, where))
        if self.resident and self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.splits = {name: split.to(device) for name, split in self.splits.items()}

    @property
    def black(self) -> float:
        """The normalised value of a black pixel: what the crop pads with (as torchvision pads images)."""
        m = torch.as_tensor(self.mean, dtype=torch.float32).flatten()[0]
        s = torch.as_tensor(self.std, dtype=torch.float32).flatten()[0]
        return float(-m / s)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        dataset = self.splits[split]
        data = IndexedDataset(dataset) if train and self.with_indices else dataset
        return (PositionedLoader if train else DataLoader)(
            data,
            batch_size=self.batch_size,
            # the training order is a function of (seed, epoch), started where a resumed run left off
            sampler=self.training_sampler(EpochShuffleSampler(data)) if train else None,
            drop_last=train and len(self.splits[split]) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_keep_batch,
            persistent_workers=self.num_workers > 0,
            # the workers' seeds from a generator of the loader's own: the global one (what a checkpoint restores
            # for augmentation and dropout) is drawn from by nothing but the training step
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63),
        )

    def resume_key(self) -> dict[str, Any]:
        if "train" not in self.splits:
            self.setup()
        train = self.splits["train"]
        seed = self._train_sampler.seed if self._train_sampler is not None else int(torch.initial_seed())
        return {"data": dataset_fingerprint(train.images, train.labels), "seed": seed}

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def train_view(self, images: Tensor, indices: Tensor, epoch: int) -> Tensor:
        """The replayable training view (``augment_seed`` set) of samples ``indices`` in ``epoch``.

        Args:
            images: ``(N, C, H, W)`` normalised training images.
            indices: ``(N,)`` their indices in the training split, on the same device.
            epoch: the training epoch.
        """
        if not self.augment:
            return images
        if self.augment_seed is None:
            raise ValueError("train_view needs augment_seed: without it the augmentation is not replayable.")
        dy, dx, flipped = crop_flip_params(self.augment_seed, epoch, indices, self.crop_padding, self.flip)
        return apply_crop_flip(images, dy, dx, flipped, self.crop_padding, fill=self.black)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)  # host copies paired before augmenting
        trainer = self.trainer
        if self.augment and trainer is not None and trainer.training:
            images, *rest = batch
            if self.augment_seed is not None:
                images = self.train_view(images, rest[1], trainer.current_epoch)  # rest = (labels, indices)
            else:
                images = random_crop_flip(images, self.crop_padding, self.flip, fill=self.black)
            batch = (images, *rest)
        return batch
