"""MutualLearning: Deep Mutual Learning, N students trained together from scratch, no teacher."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_kd.base import BaseModule, built_by_cli, infer_num_classes


def dml_losses(logits: Sequence[Tensor], targets: Tensor, temperature: float = 1.0, kl_weight: float = 1.0) -> Tensor:
    """Per-student Deep Mutual Learning losses (Zhang, Xiang, Hospedales & Lu, 2018, arXiv:1706.00384,
    §"Extension to larger student cohorts")::

        L_i = CE(z_i, y) + kl_weight · T² · 1/(S − 1) · Σ_{j≠i} KL(softmax(z_j/T).detach() ‖ softmax(z_i/T))

    The paper uses ``T = 1`` and ``kl_weight = 1``; ``T²`` keeps the KL gradient scale independent of ``T``
    (as in Hinton KD). Peers are detached, so ``L_i`` only trains student ``i`` and ``Σ_i L_i`` can be minimised
    by one optimizer: the gradient of the sum for student ``i`` is that of ``L_i``.

    Args:
        logits: ``S >= 2`` tensors ``(N, C)``, one per student.
        targets: ``(N,)`` class indices.
        temperature: softening temperature ``T > 0`` of the KL terms.
        kl_weight: weight of the mimicry (KL) term.

    Returns:
        ``(S,)``: ``L_i`` for every student.

    Example:
        >>> z = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
        >>> dml_losses(z, torch.tensor([0])).shape
        torch.Size([2])
    """
    if len(logits) < 2:
        raise ValueError(f"mutual learning needs at least 2 students' logits, got {len(logits)}.")
    log_p = [F.log_softmax(z.float() / temperature, dim=-1) for z in logits]  # S × (N, C)
    losses = []
    for i, (z, log_p_i) in enumerate(zip(logits, log_p)):
        kl = sum(
            F.kl_div(log_p_i, log_p_j.detach(), reduction="batchmean", log_target=True)
            for j, log_p_j in enumerate(log_p)
            if j != i
        )
        losses.append(F.cross_entropy(z.float(), targets) + kl_weight * temperature**2 * kl / (len(logits) - 1))
    return torch.stack(losses)


class MutualLearning(BaseModule):
    """Deep Mutual Learning (Zhang et al., 2018, arXiv:1706.00384): ``S >= 2`` students learn together, each
    from the labels and from its peers' predictions; no pretrained teacher.

    ``loss = Σ_i L_i`` with the per-student losses of :func:`dml_losses`. The paper alternates one update per
    student; here all students step together on the summed loss with one optimizer holding one param group
    per student (LIGHTNING.md #20): with detached peers this is the same gradient for each student, works
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
        # See DistillationModule: from Python, modules and callables stay out of the (weights-only) checkpoint.
        self.save_hyperparameters(ignore=[] if built_by_cli() else ["students", "optimizer", "lr_scheduler"])
        if len(students) < 2:
            raise ValueError(f"MutualLearning needs at least 2 students, got {len(students)}; add a peer.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; the paper uses 1.")
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}; the paper uses 1.")
        found = [infer_num_classes(s) for s in students]
        known = {n for n in found if n is not None}
        if len(known) > 1:
            raise ValueError(f"students predict different numbers of classes {found}; use one num_classes for all.")
        num_classes = num_classes or next(iter(known), None)
        if num_classes is None:
            raise ValueError("cannot infer the number of classes from the students; pass num_classes=…")
        self.num_classes, self.temperature, self.kl_weight = num_classes, float(temperature), float(kl_weight)
        self.students = nn.ModuleList(students)
        self.val_accs = nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in students)
        self.test_accs = nn.ModuleList(MulticlassAccuracy(num_classes, average="micro") for _ in students)

    def forward(self, inputs: Any) -> Tensor:
        """Every student's logits, stacked ``(S, N, C)``."""
        return torch.stack([student(inputs) for student in self.students])

    def trainable_parameters(self) -> list[dict[str, Any]]:
        """One param group per student (LIGHTNING.md #20); BaseModule builds the optimizer and scheduler on them."""
        return [{"params": [p for p in s.parameters() if p.requires_grad]} for s in self.students]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, targets = self.unpack_batch(batch)
        losses = dml_losses([s(inputs) for s in self.students], targets, self.temperature, self.kl_weight)
        loss = losses.sum()
        self.log("train/loss", loss, prog_bar=True)
        for i, value in enumerate(losses):
            self.log(f"train/loss_{i}", value)
        if self._trainer is None or batch_idx % self._trainer.log_every_n_steps == 0:
            # a Python float becomes a tensor on the device when logged: a blocking copy, so not every step
            self.log("train/temperature", self.temperature)
        return loss

    def _eval_step(self, batch: Any, stage: Literal["val", "test"]) -> None:
        inputs, targets = self.unpack_batch(batch)
        logits = self(inputs).float()  # (S, N, C)
        for acc, z in zip(getattr(self, f"{stage}_accs"), logits):
            acc.update(z, targets)
        ce = torch.stack([F.cross_entropy(z, targets) for z in logits]).mean()
        self.log(f"{stage}/loss", ce, sync_dist=True)

    def _log_accuracies(self, stage: Literal["val", "test"]) -> None:
        metrics = getattr(self, f"{stage}_accs")
        accs = torch.stack([acc.compute() for acc in metrics])  # synced across processes by torchmetrics
        for i, acc in enumerate(accs):
            self.log(f"{stage}/acc_{i}", acc)
        self.log(f"{stage}/acc", accs.mean(), prog_bar=True)
        for acc in metrics:
            acc.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_accuracies("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_accuracies("test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Every student's class probabilities, ``(S, N, C)``."""
        inputs = self.unpack_batch(batch)[0] if isinstance(batch, (list, tuple, dict)) else batch
        return self(inputs).softmax(-1)

    def export_student(self, i: int) -> nn.Module:
        """Student ``i`` (the live module: copy it before changing it)."""
        if not -len(self.students) <= i < len(self.students):
            raise ValueError(f"student index {i} out of range; this cohort has {len(self.students)} students.")
        return self.students[i]

    def save_student(self, i: int, path: str | os.PathLike) -> None:
        """Write student ``i``'s ``state_dict`` to ``path``: a file ``DistillationModule(teacher_ckpt=path)`` and
        ``load_teacher_weights`` read."""
        torch.save(self.export_student(i).state_dict(), path)
