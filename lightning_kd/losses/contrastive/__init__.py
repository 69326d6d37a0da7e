"""Contrastive distillation losses: the student's embedding must pick its teacher pair out of many negatives."""

from types import ModuleType as _ModuleType

from lightning_kd.losses.contrastive.crd import ContrastMemory, CRDLoss, Embed, crd_nce_loss

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
