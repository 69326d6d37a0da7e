"""Datasets whose samples also carry their position in the dataset, for memory-bank losses such as CRD.

:class:`IndexedDataset` turns ``(x, y)`` items into ``(x, y, index)``. It keeps a wrapped dataset's fast
``__getitems__``: a :class:`~lightning_kd.data.base.TensorClassificationDataset` still returns whole batches,
now ``(images, labels, indices)``, so the same identity collate works.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


def _append(item: Any, index: Any) -> tuple:
    return (*item, index) if isinstance(item, tuple | list) else (item, index)


class IndexedDataset(Dataset):
    """Wrap ``dataset`` so that item ``i`` is ``(*dataset[i], i)``.

    Batched fetching (``DataLoader`` calls ``__getitems__`` when present): if the wrapped dataset returns a
    ready batch (a tuple of tensors, as ``TensorClassificationDataset`` does), the indices are appended as
    one int64 tensor; if it returns a list of samples, each sample gets its index. Without a
    ``__getitems__`` the samples are fetched one by one, as ``DataLoader`` would.

    Args:
        dataset: a map-style dataset with ``__len__``.

    Example:
        >>> from lightning_kd.data.base import TensorClassificationDataset
        >>> ds = IndexedDataset(TensorClassificationDataset(torch.zeros(5, 1, 2, 2), torch.arange(5)))
        >>> ds[3][1:]
        (tensor(3), 3)
        >>> [t.shape for t in ds.__getitems__([4, 0])]
        [torch.Size([2, 1, 2, 2]), torch.Size([2]), torch.Size([2])]
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        return _append(self.dataset[index], index)

    def __getitems__(self, indices: list[int]) -> Any:
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is None:
            return [self[i] for i in indices]
        batch = getitems(indices)
        if isinstance(batch, tuple):  # a ready batch: one tensor per field
            return (*batch, torch.as_tensor(indices, dtype=torch.long))
        return [_append(item, i) for item, i in zip(batch, indices, strict=True)]
