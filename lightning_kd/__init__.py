"""lightning-kd: knowledge distillation for PyTorch Lightning."""

from lightning_kd.classification import ClassificationModule
from lightning_kd.losses import KDLoss, kd_loss
from lightning_kd.module import DistillationModule
from lightning_kd.schemes import (
    AdversarialDistillation,
    CachedTeacherDistillation,
    MultiTeacherDistillation,
    MutualLearning,
)
from lightning_kd.terms import FeatureTerm

__version__ = "0.1.0"
__all__ = [
    "AdversarialDistillation",
    "CachedTeacherDistillation",
    "ClassificationModule",
    "DistillationModule",
    "FeatureTerm",
    "KDLoss",
    "MultiTeacherDistillation",
    "MutualLearning",
    "__version__",
    "kd_loss",
]
