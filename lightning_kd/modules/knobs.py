"""The two knobs every distillation module has — the temperature ``T`` and the KD weight ``α`` — checked in one
place, mirrored in a device buffer for logging, and turned by the schedule callbacks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class DistillKnobs:
    """Mixin of a LightningModule: :attr:`temperature` and :attr:`alpha`, checked when set.

    Each is kept twice: as a Python float (reading it never syncs with the GPU) and in the non-persistent buffer
    ``schedule_values`` = ``(T, α)`` on the module's device, which :meth:`step_extras` logs without a
    host-to-device copy per step. A :class:`~lightning_kd.callbacks.TemperatureScheduler` or
    :class:`~lightning_kd.callbacks.LossWeightScheduler` sets them through the same checks. Subclasses that
    keep ``T`` elsewhere too (a loss module's buffer) override :meth:`on_temperature`.
    """

    _temperature: float
    _alpha: float
    schedule_values: Tensor

    def init_knobs(self, temperature: float, alpha: float) -> None:
        """Register the buffer and set both knobs (call in ``__init__``, after ``super().__init__()``)."""
        self.register_buffer("schedule_values", torch.zeros(2), persistent=False)  # type: ignore[attr-defined]
        self.alpha = alpha
        self.temperature = temperature

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"temperature must be a finite number > 0, got {value}; typical values are 1 to 8 for classifiers, "
                "1.0 for language models."
            )
        self._temperature = float(value)
        self.schedule_values[0].fill_(value)
        self.on_temperature(float(value))

    def on_temperature(self, value: float) -> None:
        """Called after every change of :attr:`temperature` (a no-op here)."""

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"alpha must be in [0, 1] (weight of the KD term), got {value}; set it between 0 (labels only) and "
                "1 (teacher only), e.g. alpha=0.9."
            )
        self._alpha = float(value)
        self.schedule_values[1].fill_(value)

    def step_extras(self) -> dict[str, Tensor]:
        """Temperature and α, logged beside the loss terms."""
        return {"temperature": self.schedule_values[0], "alpha": self.schedule_values[1]}
