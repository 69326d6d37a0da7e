"""Logit (response-based) distillation losses."""

from types import ModuleType as _ModuleType

from lightning_kd.losses.logit.adversarial import discriminator_loss, fooling_loss
from lightning_kd.losses.logit.dist_correlation import DISTLoss, dist_loss
from lightning_kd.losses.logit.dkd import DKDLoss, dkd_loss, dkd_terms, dkd_warmup
from lightning_kd.losses.logit.ensemble import confidence_weights, ensemble_kd_loss, per_teacher_kd
from lightning_kd.losses.logit.hard import hard_distillation_loss
from lightning_kd.losses.logit.kd import KDLoss, kd_loss
from lightning_kd.losses.logit.label_smoothing import LabelSmoothingLoss, label_smoothing_loss
from lightning_kd.losses.logit.logit_standardization import LogitStandardizedKDLoss, logit_standardized_kd_loss
from lightning_kd.losses.logit.mutual import dml_losses
from lightning_kd.losses.logit.reverse_js import JSKDLoss, ReverseKDLoss, js_kd_loss, reverse_kd_loss

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
