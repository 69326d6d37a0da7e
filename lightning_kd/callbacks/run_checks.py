"""RunChecks: what is checked once at the boundary of a run, so no training step pays for it.

- Labels: class indices of an integer dtype, one per sample, inside ``[0, num_classes)``. Checked once over
  every split of an in-memory data module when the run sets up; for other data modules, on the first training
  batch (one host read, once).
- A step-sized learning-rate schedule (OneCycleLR) sized for fewer steps than the run now asks for — what
  happens when ``max_epochs`` is raised on resume — is refused with the fix instead of failing at the step where
  the schedule runs out.

Every lightning-kd module adds this callback itself (``configure_callbacks``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override


class LabelError(ValueError):
    """Labels that are not class indices in ``[0, num_classes)``."""


def check_labels(labels: Tensor, num_classes: int, where: str) -> None:
    """Raise :class:`LabelError` naming ``where``, the bad values and the fix, unless ``labels`` are class indices.

    Args:
        labels: the targets of a split or a batch.
        num_classes: the module's number of classes.
        where: how to name the labels' source in the message (e.g. ``"the train split of DigitsDataModule"``).
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        shape = tuple(labels.shape)
        onehot = " (they look one-hot or soft: one row of scores per sample)" if labels.dim() == 2 else ""
        raise LabelError(
            f"labels of {where} are {labels.dtype} of shape {shape}{onehot}, but the loss needs class indices: an "
            "integer tensor (N,) with one class per sample. Convert them, e.g. labels.argmax(1).long()."
        )
    if labels.dim() != 1:
        raise LabelError(
            f"labels of {where} have shape {tuple(labels.shape)}; expected (N,): one class index per sample."
        )
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)].unique()[:5].tolist()
        raise LabelError(
            f"labels of {where} range from {low} to {high}, but the models predict {num_classes} classes "
            f"(indices 0..{num_classes - 1}); out of range: {bad}. Fix the label mapping, or build the models with "
            f"num_classes={high + 1} if the data really has that many."
        )


class RunChecks(Callback):
    """Checks made once per run; see the module docstring."""

    def __init__(self) -> None:
        self._batch_checked = False

    @staticmethod
    def _num_classes(pl_module: L.LightningModule) -> int | None:
        n = getattr(pl_module, "num_classes", None)
        return n if isinstance(n, int) and getattr(pl_module, "checks_class_labels", True) else None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._batch_checked = False
        num_classes = self._num_classes(pl_module)
        splits = getattr(trainer.datamodule, "splits", None) if trainer.datamodule is not None else None
        if num_classes is None or not isinstance(splits, dict):
            return
        for name, split in splits.items():
            labels = getattr(split, "labels", None)
            if isinstance(labels, Tensor):
                check_labels(labels, num_classes, f"the {name} split of {type(trainer.datamodule).__name__}")
        self._batch_checked = True  # every split is in memory and checked: no batch needs a look

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        for config in trainer.lr_scheduler_configs:
            sized = getattr(config.scheduler, "total_steps", None)
            if config.interval == "step" and isinstance(sized, int) and total != float("inf") and sized < total:
                raise ValueError(
                    f"the {type(config.scheduler).__name__} schedule was sized for {sized} steps when this run "
                    f"started, but the trainer now runs {int(total)} steps (max_epochs or max_steps raised on "
                    "resume?). A one-cycle schedule cannot be stretched mid-run: keep the original max_epochs, or "
                    "start a new run from this checkpoint's weights (e.g. as teacher_ckpt, or "
                    "lightning_kd.core.weights.load_weights) with the longer schedule."
                )

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._batch_checked:
            return
        self._batch_checked = True
        num_classes = self._num_classes(pl_module)
        unpack = getattr(pl_module, "unpack_batch", None)
        if num_classes is None or unpack is None:
            return
        targets = unpack(batch).targets
        if isinstance(targets, Tensor):
            check_labels(targets, num_classes, "the first training batch")
