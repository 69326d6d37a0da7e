"""Feature-based distillation losses: match intermediate feature maps of student and teacher."""

from lightning_kd.losses.feature.at import ATLoss, at_loss
from lightning_kd.losses.feature.fitnet import FitNetLoss, fitnet_loss
from lightning_kd.losses.feature.fsp import FSPLoss, fsp_loss
from lightning_kd.losses.feature.match import FeatureMatchLoss, feature_match_loss
from lightning_kd.losses.feature.nst import NSTLoss, nst_loss
from lightning_kd.losses.feature.vid import VIDLoss, vid_loss

__all__ = [
    "ATLoss",
    "FSPLoss",
    "FeatureMatchLoss",
    "FitNetLoss",
    "NSTLoss",
    "VIDLoss",
    "at_loss",
    "feature_match_loss",
    "fitnet_loss",
    "fsp_loss",
    "nst_loss",
    "vid_loss",
]
