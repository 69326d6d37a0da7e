"""TemperatureScheduler: anneal the KD temperature over the run."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lightning_kd.callbacks.schedule_base import ScheduleCallback
from lightning_kd.core.schedules import ScheduleName
from lightning_kd.core.temperature import warn_unusual_temperature


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
        if any(v is not None and not (math.isfinite(v) and v > 0) for v in (start, end)):
            raise ValueError(
                f"temperatures must be finite numbers > 0, got start={start}, end={end}; give both > 0, e.g. "
                "start=4.0, end=1.0."
            )
        super().__init__(schedule, start, end, milestones)
        for name, value in (("start", self.start), ("end", self.end)):
            warn_unusual_temperature(value, f"TemperatureScheduler {name}")
