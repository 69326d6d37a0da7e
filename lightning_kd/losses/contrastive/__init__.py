"""Contrastive distillation losses: the student's embedding must pick its teacher pair out of many negatives."""

from lightning_kd.losses.contrastive.crd import ContrastMemory, CRDLoss, Embed, crd_nce_loss

__all__ = ["CRDLoss", "ContrastMemory", "Embed", "crd_nce_loss"]
