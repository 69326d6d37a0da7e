"""ClassificationModule: plain supervised training, for teachers and the "student alone" baseline."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.model_info import infer_num_classes, run_model
from lightning_kd.modules.common import BaseModule, save_plain_hyperparameters, to_channels_last


class ClassificationModule(BaseModule):
    """Train ``model`` with cross-entropy. Its checkpoints are what ``DistillationModule(teacher_ckpt=…)``
    reads (keys ``model.*``), so the same recipe trains a teacher or the student-alone baseline.

    Args:
        model: the network (YAML: ``class_path``/``init_args``).
        num_classes: classes; inferred from the model when ``None``.
        label_smoothing: cross-entropy label smoothing (Szegedy et al., 2016, arXiv:1512.00567) — the
            teacher-free baseline to compare soft targets against.
        optimizer: optimizer over the model's parameters.
        lr_scheduler: optional LR scheduler; an unset ``total_steps`` (OneCycleLR) is filled in.
        scheduler_interval: ``auto``, ``step`` or ``epoch`` (see DistillationModule).
        channels_last: store the model's weights in ``channels_last`` memory format (see DistillationModule).

    Example:
        >>> from lightning_kd.models import MLP
        >>> ClassificationModule(MLP(64, 10)).num_classes
        10
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        channels_last: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        save_plain_hyperparameters(self)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1), got {label_smoothing}; use a value below 1 (1 makes every target "
                "uniform), e.g. label_smoothing=0.1."
            )
        found = infer_num_classes(model)
        if num_classes is not None and found is not None and found != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the model predicts {found} classes; leave num_classes unset (it is "
                f"read off the model) or build the model with num_classes={num_classes}."
            )
        num_classes = num_classes or found
        if num_classes is None:
            raise ValueError("cannot infer the number of classes from the model; pass num_classes=…")
        self.num_classes = num_classes
        self.model = model
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        self._build_metrics(num_classes)

    def configure_model(self) -> None:
        if self.channels_last:
            to_channels_last(self.model)

    def forward(self, inputs: Any) -> Tensor:
        return run_model(self.model, inputs, "model")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack_batch(batch)
        loss = F.cross_entropy(self(batch.inputs).float(), batch.targets, label_smoothing=self.label_smoothing)
        self.log_step(loss, batch_idx=batch_idx)
        return loss

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        logits = self(batch.inputs).float()
        acc = self.val_acc if stage == "val" else self.test_acc
        acc(logits, batch.targets)
        self.log(f"{stage}/loss", F.cross_entropy(logits, batch.targets), sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=True)
