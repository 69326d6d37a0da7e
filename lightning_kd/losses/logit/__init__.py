"""Logit (response-based) distillation losses."""

from lightning_kd.losses.logit.dist import DISTLoss, dist_loss
from lightning_kd.losses.logit.divergence import JSKDLoss, ReverseKDLoss, js_kd_loss, reverse_kd_loss
from lightning_kd.losses.logit.dkd import DKDLoss, dkd_loss, dkd_terms, dkd_warmup
from lightning_kd.losses.logit.kd import KDLoss, kd_loss
from lightning_kd.losses.logit.label_smoothing import LabelSmoothingLoss, label_smoothing_loss
from lightning_kd.losses.logit.ls_kd import LogitStandardizedKDLoss, logit_standardized_kd_loss

__all__ = [
    "DISTLoss",
    "DKDLoss",
    "JSKDLoss",
    "KDLoss",
    "LabelSmoothingLoss",
    "LogitStandardizedKDLoss",
    "ReverseKDLoss",
    "dist_loss",
    "dkd_loss",
    "dkd_terms",
    "dkd_warmup",
    "js_kd_loss",
    "kd_loss",
    "label_smoothing_loss",
    "logit_standardized_kd_loss",
    "reverse_kd_loss",
]
