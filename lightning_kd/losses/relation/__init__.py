"""Relation-based distillation losses: match relations between the samples of a batch."""

from types import ModuleType as _ModuleType

from lightning_kd.losses.relation.cc import CCLoss, cc_loss
from lightning_kd.losses.relation.pkt import PKTLoss, pkt_loss
from lightning_kd.losses.relation.rkd import RKDLoss, rkd_loss
from lightning_kd.losses.relation.sp import SPLoss, sp_loss

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
