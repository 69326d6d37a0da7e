"""TemperatureScheduler: anneal the KD temperature over the run."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_kd.callbacks.schedule_base import ScheduleCallback
from lightning_kd.core.schedules import ScheduleName


class TemperatureScheduler(ScheduleCallback):
    """Move ``DistillationModule.temperature`` from ``start`` to ``end`` over the run, per optimizer step.

    Args:
        schedule: ``constant``, ``linear``, ``cosine`` or ``step``.
        start: temperature at step 0, ``> 0``.
        end: temperature at the last step, ``> 0`` (``None``: same as ``start``).
        milestones: fractions of the run where a ``step`` schedule jumps.

    Example::

        trainer = Trainer(callbacks=[TemperatureScheduler("cosine", start=8.0, end=2.0)])

    In YAML::

        trainer:
          callbacks:
            - class_path: lightning_kd.callbacks.TemperatureScheduler
              init_args: {schedule: linear, start: 8.0, end: 2.0}
    """

    attribute = "temperature"

    def __init__(
        self,
        schedule: ScheduleName = "linear",
        start: float = 4.0,
        end: float | None = None,
        milestones: Sequence[float] = (0.5,),
    ) -> None:
        if start <= 0 or (end is not None and end <= 0):
            raise ValueError(f"temperatures must be > 0, got start={start}, end={end}.")
        super().__init__(schedule, start, end, milestones)
