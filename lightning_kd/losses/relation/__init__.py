"""Relation-based distillation losses: match relations between the samples of a batch."""

from lightning_kd.losses.relation.cc import CCLoss, cc_loss
from lightning_kd.losses.relation.pkt import PKTLoss, pkt_loss
from lightning_kd.losses.relation.rkd import RKDLoss, rkd_loss
from lightning_kd.losses.relation.sp import SPLoss, sp_loss

__all__ = ["CCLoss", "PKTLoss", "RKDLoss", "SPLoss", "cc_loss", "pkt_loss", "rkd_loss", "sp_loss"]
