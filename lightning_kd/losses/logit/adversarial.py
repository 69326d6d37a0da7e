"""Adversarial KD losses: a discriminator tells teacher outputs from the student's.

Xu, Hsu & Huang, "Training Shallow and Thin Networks for Acceleration via Knowledge Distillation with
Conditional Adversarial Networks", 2017, arXiv:1709.00513::

    discriminator (teacher = real = 1, student = fake = 0):  L_D = ½ · [BCE(D(t), 1) + BCE(D(s), 0)]
    student (the non-saturating GAN loss):                   L_adv = BCE(D(s), 1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def discriminator_loss(d_student: Tensor, d_teacher: Tensor) -> Tensor:
    """``½ · [BCE(D(t), 1) + BCE(D(s), 0)]`` on discriminator logits.

    Args:
        d_student: ``(N,)`` discriminator logits on the student's outputs (detached by the caller).
        d_teacher: ``(N,)`` discriminator logits on the teacher's outputs.

    Returns:
        0-d tensor.

    Example:
        >>> round(float(discriminator_loss(torch.zeros(4), torch.zeros(4))), 4)  # D undecided: log 2
        0.6931
    """
    real = F.binary_cross_entropy_with_logits(d_teacher, torch.ones_like(d_teacher))
    fake = F.binary_cross_entropy_with_logits(d_student, torch.zeros_like(d_student))
    return 0.5 * (real + fake)


def fooling_loss(d_student: Tensor) -> Tensor:
    """``BCE(D(s), 1)``: small when the discriminator takes the student for the teacher.

    Args:
        d_student: ``(N,)`` discriminator logits on the student's outputs.

    Returns:
        0-d tensor.

    Example:
        >>> round(float(fooling_loss(torch.zeros(4))), 4)
        0.6931
    """
    return F.binary_cross_entropy_with_logits(d_student, torch.ones_like(d_student))
