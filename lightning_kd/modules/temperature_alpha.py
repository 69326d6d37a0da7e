"""The two settings every distillation module owns — the temperature ``T`` and the KD weight ``α`` — checked when
set, and the one place a loss reads them from.

The module is their only owner: a recipe states ``temperature`` once (on the module), a
:class:`~lightning_kd.callbacks.TemperatureScheduler` or :class:`~lightning_kd.callbacks.LossWeightScheduler`
sets the module's value through the same checks, and the module passes ``T`` to its loss on every call. Losses keep
no copy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_kd.core.temperature import warn_unusual_temperature


class TemperatureAlpha:
    """Mixin of a LightningModule: :attr:`temperature` and :attr:`alpha`, checked when set.

    Both are Python floats (reading them never syncs with a GPU; a loss is called eagerly, so a new value costs no
    recompile). For logging only, each change is also written into the non-persistent buffer ``schedule_values``
    = ``(T, α)`` on the module's device, which :meth:`step_extras` logs without a host-to-device copy per step.
    """

    _temperature: float
    _alpha: float
    schedule_values: Tensor

    def init_temperature_alpha(self, temperature: float, alpha: float) -> None:
        """Register the logging buffer and set both (call in ``__init__``, after ``super().__init__()``)."""
        self.register_buffer("schedule_values", torch.zeros(2), persistent=False)  # type: ignore[attr-defined]
        self.alpha = alpha
        self.temperature = temperature
        warn_unusual_temperature(self._temperature)

    @property
    def temperature(self) -> float:
        """``T``: both distributions are softened by it before the KD term compares them."""
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

    @property
    def alpha(self) -> float:
        """``α``: the weight of the KD term; the cross-entropy gets ``1 − α``."""
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
