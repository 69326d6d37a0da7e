"""LossWeightScheduler: move the KD weight α over the run."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import lightning as L
from typing_extensions import override

from lightning_kd.callbacks.schedule_base import ScheduleCallback
from lightning_kd.core.schedules import ScheduleName


class LossWeightScheduler(ScheduleCallback):
    """Move ``DistillationModule.alpha`` (KD weight; CE gets ``1 − α``) — or, with ``term``, the weight of
    the feature term of that name — from ``start`` to ``end``.

    A common use is a KD warm-up (``schedule="linear", start=0.0, end=0.9``) or handing over from the
    teacher to the labels late in training (``start=0.9, end=0.1``).

    Args:
        schedule: ``constant``, ``linear``, ``cosine`` or ``step``.
        start: α at step 0, in ``[0, 1]``.
        end: α at the last step, in ``[0, 1]`` (``None``: same as ``start``).
        milestones: fractions of the run where a ``step`` schedule jumps.
        term: name of a :class:`~lightning_kd.FeatureTerm` whose ``weight`` to schedule instead of α (then
            ``start``/``end`` may exceed 1, e.g. a FitNets hint weight of 100).

    Example::

        trainer = Trainer(callbacks=[LossWeightScheduler("linear", start=0.0, end=0.9)])
        # FitNets' two stages: the hint term first, switched off after 20 % of the run
        trainer = Trainer(callbacks=[LossWeightScheduler("step", 100.0, 0.0, milestones=[0.2], term="hint")])
    """

    attribute = "alpha"

    def __init__(
        self,
        schedule: ScheduleName = "linear",
        start: float = 0.9,
        end: float | None = None,
        milestones: Sequence[float] = (0.5,),
        term: str | None = None,
    ) -> None:
        for name, v in (("start", start), ("end", end)):
            if v is None:
                continue
            if term is None and not 0.0 <= v <= 1.0:
                raise ValueError(f"alpha {name} must be in [0, 1], got {v}; set it between 0 and 1, e.g. {name}=0.9.")
            if term is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(
                    f"weight {name} of term {term!r} must be a finite number >= 0, got {v}; e.g. {name}=1.0."
                )
        super().__init__(schedule, start, end, milestones)
        self.term = term

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.term is None:
            return super().on_fit_start(trainer, pl_module)
        names = [t.name for t in getattr(pl_module, "feature_terms", [])]
        if self.term not in names:
            close = difflib.get_close_matches(self.term, names, n=1)
            hint = f"did you mean term={close[0]!r}? " if close else ""
            raise ValueError(
                f"LossWeightScheduler: no feature term named {self.term!r}; the module has {names}: {hint}set term to "
                "one of them, or to None to schedule alpha (the KD term's weight)."
            )

    @override
    def apply(self, pl_module: L.LightningModule, value: float) -> None:
        if self.term is None:
            return super().apply(pl_module, value)
        next(t for t in pl_module.feature_terms if t.name == self.term).weight = value
