"""RunChecks: what is checked once at the boundary of a run, so no training step pays for it.

- Labels: class indices of an integer dtype, one per sample, inside ``[0, num_classes)``; inputs: no NaN or
  infinity. Checked once over every split of an in-memory data module when the run sets up (the inputs when the
  data module loads them); for other data, on the first training, validation and test batch (one host read each,
  once: the sanity check's validation batch comes before any training batch).
- Trainer settings that are legal but mean nothing: a negative ``gradient_clip_val`` (Lightning ignores it,
  so the run would train unclipped) is refused when fit sets up.
- A step-sized learning-rate schedule (OneCycleLR) sized for fewer steps than the run now asks for — what
  happens when ``max_epochs`` is raised on resume — is refused with the fix instead of failing at the step where
  the schedule runs out.

Every lightning-kd module adds this callback itself (``configure_callbacks``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from lightning_kd.core.data_checks import LabelError, NonFiniteInputError, check_finite_inputs, check_labels

__all__ = ["LabelError", "NonFiniteInputError", "RunChecks", "check_labels"]


class RunChecks(Callback):
    """Checks made once per run; see the module docstring."""

    _STAGES = ("training", "validation", "test")

    def __init__(self) -> None:
        self._checked: set[str] = set()  # the stages whose first batch was checked (or needs no look)

    @staticmethod
    def _num_classes(pl_module: L.LightningModule) -> int | None:
        n = getattr(pl_module, "num_classes", None)
        return n if isinstance(n, int) and getattr(pl_module, "checks_class_labels", True) else None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._checked = set()
        clip = trainer.gradient_clip_val
        if stage == "fit" and clip is not None and not clip >= 0:
            raise ValueError(
                f"trainer.gradient_clip_val={clip} is negative (or not a number): Lightning would train without "
                "clipping. Set a positive bound, e.g. gradient_clip_val: 1.0, or null to clip nothing."
            )
        num_classes = self._num_classes(pl_module)
        splits = getattr(trainer.datamodule, "splits", None) if trainer.datamodule is not None else None
        if num_classes is None or not isinstance(splits, dict):
            return
        for name, split in splits.items():
            labels = getattr(split, "labels", None)
            if isinstance(labels, Tensor):
                check_labels(labels, num_classes, f"the {name} split of {type(trainer.datamodule).__name__}")
        # every split is in memory: labels checked here, inputs when the data module loaded them
        self._checked = set(self._STAGES)

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

    def _check_first_batch(self, stage: str, pl_module: L.LightningModule, batch: Any) -> None:
        """Labels and inputs of the first batch of ``stage`` (one host read, once per run and stage): a plain
        DataLoader's data is seen nowhere else before the loss meets it (and the sanity check's validation batch
        comes before any training batch)."""
        if stage in self._checked:
            return
        self._checked.add(stage)
        num_classes = self._num_classes(pl_module)
        unpack = getattr(pl_module, "unpack_batch", None)
        if num_classes is None or unpack is None:
            return
        unpacked = unpack(batch)
        where = f"the first {stage} batch"
        if isinstance(unpacked.targets, Tensor):
            check_labels(unpacked.targets, num_classes, where)
        if isinstance(unpacked.inputs, Tensor):
            check_finite_inputs(unpacked.inputs, where)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._check_first_batch("training", pl_module, batch)

    @override
    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._check_first_batch("validation", pl_module, batch)

    @override
    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._check_first_batch("test", pl_module, batch)
