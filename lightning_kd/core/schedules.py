"""Schedules as pure functions of ``(step, total_steps)``.

Callbacks recompute a value from ``trainer.global_step`` each step instead of accumulating state, so a run
resumed from a checkpoint continues on exactly the same curve (nanoGPT's ``get_lr`` style).
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleName = Literal["constant", "linear", "cosine", "step"]
SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "step")


def schedule_value(
    kind: ScheduleName,
    step: int,
    total_steps: int,
    start: float,
    end: float,
    milestones: tuple[float, ...] = (0.5,),
) -> float:
    """Value of a ``start → end`` schedule at ``step`` of ``total_steps``.

    Args:
        kind: ``constant`` (always ``start``), ``linear``, ``cosine`` (half-cosine from start to end) or
            ``step`` (piecewise constant: moves evenly from ``start`` to ``end`` at each milestone).
        step: current optimizer step, ``0 ≤ step``; past ``total_steps`` the value stays at ``end``.
        total_steps: steps in the whole run (``trainer.estimated_stepping_batches``), ``> 0``.
        start: value at step 0.
        end: value at ``total_steps``.
        milestones: for ``step`` only — fractions of the run in ``(0, 1)`` where the value jumps.

    Example:
        >>> schedule_value("linear", 5, 10, start=4.0, end=1.0)
        2.5
        >>> schedule_value("step", 6, 10, start=4.0, end=1.0, milestones=(0.5,))
        1.0
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}.")
    if kind == "constant":
        return start
    progress = min(max(step, 0) / total_steps, 1.0)
    if kind == "linear":
        return start + (end - start) * progress
    if kind == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    passed = sum(progress >= m for m in milestones)
    return start + (end - start) * passed / len(milestones)


def check_milestones(milestones: tuple[float, ...]) -> tuple[float, ...]:
    """Validate step-schedule milestones (fractions of the run, strictly increasing, inside (0, 1))."""
    ms = tuple(float(m) for m in milestones)
    if not ms or any(not 0.0 < m < 1.0 for m in ms) or list(ms) != sorted(set(ms)):
        raise ValueError(
            f"milestones must be increasing fractions of the run inside (0, 1), got {milestones}; "
            "e.g. milestones=[0.5, 0.75]."
        )
    return ms
