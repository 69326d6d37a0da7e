"""Training schemes beyond one teacher -> one student: several teachers, mutual learning, adversarial KD,
a cached (offline) teacher."""

from lightning_kd.schemes.adversarial import (
    AdversarialDistillation,
    discriminator_loss,
    fooling_loss,
    mlp_discriminator,
)
from lightning_kd.schemes.cached import CachedTeacherDistillation
from lightning_kd.schemes.multi_teacher import (
    MultiTeacherDistillation,
    confidence_weights,
    ensemble_kd_loss,
    per_teacher_kd,
)
from lightning_kd.schemes.mutual import MutualLearning, dml_losses

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
