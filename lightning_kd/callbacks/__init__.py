"""Callbacks: temperature and loss-weight schedules, feature hooks."""

from lightning_kd.callbacks.feature_hooks import FeatureHooks
from lightning_kd.callbacks.loss_weight import LossWeightScheduler
from lightning_kd.callbacks.temperature import TemperatureScheduler

__all__ = ["FeatureHooks", "LossWeightScheduler", "TemperatureScheduler"]
