"""0.1.0's ``lightning_kd.schemes``: the schemes are LightningModules in :mod:`lightning_kd.modules` now and
their maths pure functions in :mod:`lightning_kd.losses`. Kept one release so old imports and recipes'
``class_path: lightning_kd.schemes.…`` keep working."""

from lightning_kd.cache.teacher import CachedTeacherDistillation
from lightning_kd.losses import (
    confidence_weights,
    discriminator_loss,
    dml_losses,
    ensemble_kd_loss,
    fooling_loss,
    per_teacher_kd,
)
from lightning_kd.models.discriminator import mlp_discriminator
from lightning_kd.modules.adversarial import AdversarialDistillation
from lightning_kd.modules.multi_teacher import MultiTeacherDistillation
from lightning_kd.modules.mutual import MutualLearning

__all__ = [
    "AdversarialDistillation",
    "CachedTeacherDistillation",
    "MultiTeacherDistillation",
    "MutualLearning",
    "confidence_weights",
    "discriminator_loss",
    "dml_losses",
    "ensemble_kd_loss",
    "fooling_loss",
    "mlp_discriminator",
    "per_teacher_kd",
]
