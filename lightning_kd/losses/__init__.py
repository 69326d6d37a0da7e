"""Distillation losses: pure functions on tensors (like ``torch.nn.functional``) and thin modules.

Argument order everywhere: student first, then teacher, then options. Losses import only torch.

- logit: :func:`kd_loss`, :func:`dkd_loss`, :func:`dist_loss`, :func:`logit_standardized_kd_loss`,
  :func:`reverse_kd_loss`, :func:`js_kd_loss`, :func:`label_smoothing_loss` (teacher-free baseline)
- feature: :func:`fitnet_loss`, :func:`at_loss`, :func:`nst_loss`, :func:`vid_loss`, :func:`fsp_loss`,
  :func:`feature_match_loss`
- relation: :func:`sp_loss`, :func:`rkd_loss`, :func:`pkt_loss`, :func:`cc_loss`
"""

from lightning_kd.losses.contrastive import CRDLoss, crd_nce_loss
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
from lightning_kd.losses.logit import (
    DISTLoss,
    DKDLoss,
    JSKDLoss,
    KDLoss,
    LabelSmoothingLoss,
    LogitStandardizedKDLoss,
    ReverseKDLoss,
    dist_loss,
    dkd_loss,
    dkd_terms,
    dkd_warmup,
    js_kd_loss,
    kd_loss,
    label_smoothing_loss,
    logit_standardized_kd_loss,
    reverse_kd_loss,
)
from lightning_kd.losses.relation import CCLoss, PKTLoss, RKDLoss, SPLoss, cc_loss, pkt_loss, rkd_loss, sp_loss

__all__ = [
    "CRDLoss",
    "crd_nce_loss",
    "ATLoss",
    "CCLoss",
    "DISTLoss",
    "DKDLoss",
    "FSPLoss",
    "FeatureMatchLoss",
    "FitNetLoss",
    "JSKDLoss",
    "KDLoss",
    "LabelSmoothingLoss",
    "LogitStandardizedKDLoss",
    "NSTLoss",
    "PKTLoss",
    "RKDLoss",
    "ReverseKDLoss",
    "SPLoss",
    "VIDLoss",
    "at_loss",
    "cc_loss",
    "dist_loss",
    "dkd_loss",
    "dkd_terms",
    "dkd_warmup",
    "feature_match_loss",
    "fitnet_loss",
    "fsp_loss",
    "js_kd_loss",
    "kd_loss",
    "label_smoothing_loss",
    "logit_standardized_kd_loss",
    "nst_loss",
    "pkt_loss",
    "reverse_kd_loss",
    "rkd_loss",
    "sp_loss",
    "vid_loss",
]
