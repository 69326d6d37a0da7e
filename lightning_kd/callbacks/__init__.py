"""Callbacks: temperature and loss-weight schedules."""

from lightning_kd.callbacks.loss_weight import LossWeightScheduler
from lightning_kd.callbacks.temperature import TemperatureScheduler

__all__ = ["LossWeightScheduler", "TemperatureScheduler"]
