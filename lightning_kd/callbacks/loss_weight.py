"""LossWeightScheduler: move the KD weight α over the run."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_kd.callbacks._schedule import ScheduleCallback
from lightning_kd.schedules import ScheduleName


class LossWeightScheduler(ScheduleCallback):
    """Move ``DistillationModule.alpha`` (KD weight; CE gets ``1 − α``) from ``start`` to ``end``.

    A common use is a KD warm-up (``schedule="linear", start=0.0, end=0.9``) or handing over from the
    teacher to the labels late in training (``start=0.9, end=0.1``).

    Args:
        schedule: ``constant``, ``linear``, ``cosine`` or ``step``.
        start: α at step 0, in ``[0, 1]``.
        end: α at the last step, in ``[0, 1]`` (``None``: same as ``start``).
        milestones: fractions of the run where a ``step`` schedule jumps.

    Example::

        trainer = Trainer(callbacks=[LossWeightScheduler("linear", start=0.0, end=0.9)])
    """

    attribute = "alpha"

    def __init__(
        self,
        schedule: ScheduleName = "linear",
        start: float = 0.9,
        end: float | None = None,
        milestones: Sequence[float] = (0.5,),
    ) -> None:
        for name, v in (("start", start), ("end", end)):
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"alpha {name} must be in [0, 1], got {v}.")
        super().__init__(schedule, start, end, milestones)
