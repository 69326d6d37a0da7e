"""Distillation losses: pure functions on tensors (like ``torch.nn.functional``) and thin modules.

Argument order everywhere: student first, then teacher, then options. Losses import only torch.
"""

from lightning_kd.losses.logit import KDLoss, kd_loss

__all__ = ["KDLoss", "kd_loss"]
