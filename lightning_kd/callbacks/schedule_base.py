"""Shared logic of the schedule callbacks: recompute a value from ``global_step`` before every batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_kd.core.schedules import SCHEDULES, ScheduleName, check_milestones, schedule_value


class ScheduleCallback(Callback):
    """Set ``pl_module.<attribute>`` to ``schedule(global_step, total_steps)`` before each training batch.

    Stateless on purpose: the value depends only on ``trainer.global_step`` (restored on resume) and
    ``trainer.estimated_stepping_batches``, so a resumed run continues exactly on the curve.
    """

    attribute: str = ""

    def __init__(
        self, schedule: ScheduleName, start: float, end: float | None, milestones: Sequence[float] = (0.5,)
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        self.schedule = schedule
        self.start = float(start)
        self.end = float(start if end is None else end)
        self.milestones = check_milestones(tuple(milestones)) if schedule == "step" else tuple(milestones)

    def value(self, step: int, total_steps: int) -> float:
        """The scheduled value at ``step`` of ``total_steps`` (pure)."""
        return schedule_value(self.schedule, step, total_steps, self.start, self.end, self.milestones)

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, self.attribute):
            raise TypeError(
                f"{type(self).__name__} sets `{self.attribute}` but {type(pl_module).__name__} has no such "
                "attribute; use it with DistillationModule (or a subclass)."
            )

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError(
                f"{type(self).__name__} spreads its schedule over the run, but this run has no end "
                "(max_epochs=-1 and max_steps=-1); set trainer.max_epochs or trainer.max_steps."
            )
        total = int(total)
        self.apply(pl_module, self.value(trainer.global_step, total))

    def apply(self, pl_module: L.LightningModule, value: float) -> None:
        """Put ``value`` into the module (default: set ``self.attribute``)."""
        setattr(pl_module, self.attribute, value)
