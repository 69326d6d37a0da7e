"""Logit (response-based) distillation losses."""

from lightning_kd.losses.logit.kd import KDLoss, kd_loss

__all__ = ["KDLoss", "kd_loss"]
