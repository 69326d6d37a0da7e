"""Packed token rows as causal-LM samples, and the loaders that read them in an order a checkpoint can continue."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_kd.data.resume import PositionedLoader
from lightning_kd.data.sampling import EpochShuffleSampler

IGNORE_INDEX = -100
"""The label of a position that takes no loss (PyTorch's ``cross_entropy`` default ``ignore_index``)."""


def seeded_loader(
    dataset: Dataset, batch_size: int, sampler: EpochShuffleSampler | None, num_workers: int, collate: Any
) -> DataLoader:
    """A DataLoader whose training order depends only on its sampler's seed and the epoch (paired runs see the same
    batches, a resumed run the batches it would have seen); ``sampler=None``: in order (evaluation)."""
    return (DataLoader if sampler is None else PositionedLoader)(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        # a generator of its own for the workers' seeds: the global RNG is left to the training step
        generator=torch.Generator().manual_seed(sampler.seed if sampler is not None else 0),
        drop_last=sampler is not None and len(dataset) > batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
    )


class PackedSequences(Dataset):
    """Rows of a ``(N, L)`` token array as causal-LM samples; whole batches come from ``__getitems__``. With
    ``token_bytes`` (``(N, L)``: the bytes of text each token stands for) batches carry them, and evaluation reports
    bits per byte."""

    def __init__(self, ids: np.ndarray, with_indices: bool = False, token_bytes: np.ndarray | None = None) -> None:
        if token_bytes is not None and token_bytes.shape != ids.shape:
            raise ValueError(f"token_bytes has shape {token_bytes.shape}, the token rows {ids.shape}.")
        self.ids, self.with_indices, self.token_bytes = ids, with_indices, token_bytes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        input_ids = torch.from_numpy(self.ids[np.asarray(indices)].astype(np.int64))  # (B, L)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}
        if self.with_indices:
            batch["index"] = torch.as_tensor(indices, dtype=torch.int64)  # (B,): an offline teacher's keys
        if self.token_bytes is not None:
            batch["token_bytes"] = torch.from_numpy(self.token_bytes[np.asarray(indices)].astype(np.int64))
        return batch


def keep_batch(batch: Any) -> Any:
    """Collate for :class:`PackedSequences`: ``__getitems__`` already returns the batch."""
    return batch


def spread_rows(rows: np.ndarray, keep: int) -> np.ndarray:
    """``keep`` of the packed ``rows``, evenly spaced from the first to the last (all of them when ``keep`` is not
    smaller): a deterministic subset that samples the whole corpus, not its first files."""
    if keep >= len(rows):
        return rows
    return rows[np.linspace(0, len(rows) - 1, keep).round().astype(np.int64)]
