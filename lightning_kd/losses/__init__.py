"""Distillation losses: pure functions on tensors (like ``torch.nn.functional``) and thin modules.

Argument order everywhere: student first, then teacher, then options. Losses import only torch.

- logit: :func:`kd_loss`
- feature: :func:`fitnet_loss`, :func:`at_loss`, :func:`nst_loss`, :func:`vid_loss`, :func:`fsp_loss`,
  :func:`feature_match_loss`
- relation: :func:`sp_loss`, :func:`rkd_loss`, :func:`pkt_loss`, :func:`cc_loss`
"""

from lightning_kd.losses.feature import (
    ATLoss,
    FeatureMatchLoss,
    FitNetLoss,
    FSPLoss,
    NSTLoss,
    VIDLoss,
    at_loss,
    feature_match_loss,
    fitnet_loss,
    fsp_loss,
    nst_loss,
    vid_loss,
)
from lightning_kd.losses.logit import KDLoss, kd_loss
from lightning_kd.losses.relation import CCLoss, PKTLoss, RKDLoss, SPLoss, cc_loss, pkt_loss, rkd_loss, sp_loss

__all__ = [
    "ATLoss",
    "CCLoss",
    "FSPLoss",
    "FeatureMatchLoss",
    "FitNetLoss",
    "KDLoss",
    "NSTLoss",
    "PKTLoss",
    "RKDLoss",
    "SPLoss",
    "VIDLoss",
    "at_loss",
    "cc_loss",
    "feature_match_loss",
    "fitnet_loss",
    "fsp_loss",
    "kd_loss",
    "nst_loss",
    "pkt_loss",
    "rkd_loss",
    "sp_loss",
    "vid_loss",
]
