"""Feature-based distillation losses: match intermediate feature maps of student and teacher."""

from types import ModuleType as _ModuleType

from lightning_kd.losses.feature.at import ATLoss, at_loss
from lightning_kd.losses.feature.fitnet import FitNetLoss, fitnet_loss
from lightning_kd.losses.feature.fsp import FSPLoss, fsp_loss
from lightning_kd.losses.feature.match import FeatureMatchLoss, feature_match_loss
from lightning_kd.losses.feature.nst import NSTLoss, nst_loss
from lightning_kd.losses.feature.vid import VIDLoss, vid_loss

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
