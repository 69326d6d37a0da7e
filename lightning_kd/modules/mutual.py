"""MutualLearning: Deep Mutual Learning, N students trained together from scratch, no teacher."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_kd.core.batch import Batch
from lightning_kd.core.model_info import infer_num_classes, run_model
from lightning_kd.losses import dml_losses
from lightning_kd.modules.common import BaseModule, save_plain_hyperparameters


class MutualLearning(BaseModule):
    """Deep Mutual Learning (Zhang et al., 2018, arXiv:1706.00384): ``S >= 2`` students learn together, each
    from the labels and from its peers' predictions; no pretrained teacher.

    ``loss = Σ_i L_i`` with the per-student losses of :func:`dml_losses`. The paper alternates one update per
    student; here all students step together on the summed loss with one optimizer holding one param group
    per student: with detached peers this is the same gradient for each student, works
    with automatic optimization and raises no DDP unused-parameter error.

    Logs ``train/loss``, ``train/loss_<i>``, ``val/acc_<i>`` / ``test/acc_<i>`` per student and ``val/acc`` /
    ``test/acc`` = the mean of the students' accuracies (so checkpointing on ``val/acc`` tracks the cohort;
    pick the best student from ``val/acc_<i>`` and take it out with :meth:`export_student` or
    :meth:`save_student`, whose file ``DistillationModule(teacher_ckpt=…)`` reads).

    Args:
        students: the networks to train (YAML: a list of ``class_path``/``init_args``), usually from scratch.
        temperature: softening temperature ``T > 0`` of the KL terms (the paper: 1).
        kl_weight: weight ``>= 0`` of the mimicry term (the paper: 1).
        num_classes: classes; inferred from the students when ``None``.
        optimizer: built with one param group per student.
        lr_scheduler: optional LR scheduler; an unset ``total_steps`` (OneCycleLR) is filled in.
        scheduler_interval: ``auto``, ``step`` or ``epoch`` (see DistillationModule).

    Example:
        >>> from lightning_kd.models import MLP
        >>> len(MutualLearning([MLP(64, 10, [16]), MLP(64, 10, [16])]).students)
        2
    """

    def __init__(
        self,
        students: list[nn.Module],
        temperature: float = 1.0,
        kl_weight: float = 1.0,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        save_plain_hyperparameters(self)
        if len(students) < 2:
            raise ValueError(f"MutualLearning needs at least 2 students, got {len(students)}; add a peer.")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}; the paper uses 1.")
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight}; the paper uses 1.")
        found = [infer_num_classes(s) for s in students]
        known = {n for n in found if n is not None}
        if len(known) > 1:
            raise ValueError(f"students predict different numbers of classes {found}; use one num_classes for all.")
        if num_classes is not None and known and known != {num_classes}:
            raise ValueError(
                f"num_classes={num_classes} but the students predict {sorted(known)} classes; leave num_classes unset "
                "(it is read off the students) or build them with the same num_classes."
            )
        num_classes = num_classes or next(iter(known), None)
        if num_classes is None:
            raise ValueError("cannot infer the number of classes from the students; pass num_classes=…")
        self.num_classes, self.temperature, self.kl_weight = num_classes, float(temperature), float(kl_weight)
        self.students = nn.ModuleList(students)
        self.register_buffer("temperature_value", torch.tensor(float(temperature)), persistent=False)  # for the log
        self.val_accs = nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in students)
        self.test_accs = nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in students)

    def forward(self, inputs: Any) -> Tensor:
        """Every student's logits, stacked ``(S, N, C)``."""
        return torch.stack([run_model(student, inputs, f"student {i}") for i, student in enumerate(self.students)])

    def trainable_parameters(self) -> list[dict[str, Any]]:
        """One param group per student; BaseModule builds the optimizer and scheduler on them."""
        return [{"params": [p for p in s.parameters() if p.requires_grad]} for s in self.students]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack_batch(batch)
        logits = [run_model(s, batch.inputs, f"student {i}") for i, s in enumerate(self.students)]
        losses = dml_losses(logits, batch.targets, self.temperature, self.kl_weight)
        loss = losses.sum()
        self.log_step(loss, {str(i): value for i, value in enumerate(losses)}, batch_idx=batch_idx)
        return loss

    def step_extras(self) -> dict[str, Tensor]:
        return {"temperature": self.temperature_value}

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        logits = self(batch.inputs).float()  # (S, N, C)
        for acc, z in zip(getattr(self, f"{stage}_accs"), logits):
            acc.update(z, batch.targets)
        ce = torch.stack([F.cross_entropy(z, batch.targets) for z in logits]).mean()
        self.log(f"{stage}/loss", ce, sync_dist=True)

    def _log_accuracies(self, stage: Literal["val", "test"]) -> None:
        metrics = getattr(self, f"{stage}_accs")
        accs = torch.stack([acc.compute() for acc in metrics])  # synced across processes by torchmetrics
        for i, acc in enumerate(accs):
            self.log(f"{stage}/acc_{i}", acc)
        self.log(f"{stage}/acc", accs.mean(), prog_bar=True)
        for acc in metrics:
            acc.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_accuracies("val")

    def on_test_epoch_end(self) -> None:
        self._log_accuracies("test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Every student's class probabilities, ``(S, N, C)``."""
        return self(self.unpack_batch(batch).inputs).softmax(-1)

    def export_student(self, i: int) -> nn.Module:
        """Student ``i`` (the live module: copy it before changing it)."""
        if not -len(self.students) <= i < len(self.students):
            raise ValueError(f"student index {i} out of range; this cohort has {len(self.students)} students.")
        return self.students[i]

    def save_student(self, i: int, path: str | os.PathLike) -> None:
        """Write student ``i``'s ``state_dict`` to ``path``: a file ``DistillationModule(teacher_ckpt=path)`` and
        :func:`~lightning_kd.core.weights.load_weights` read."""
        torch.save(self.export_student(i).state_dict(), path)
