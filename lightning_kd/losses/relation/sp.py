"""Similarity-preserving distillation: match the batch's row-normalised sample-similarity matrices.

Tung & Mori, "Similarity-Preserving Knowledge Distillation", 2019, arXiv:1907.09682.

    G   = normalize_rows( f.flatten(1) @ f.flatten(1)ᵀ )                 (N, N)
    L_SP = ‖G_s - G_t‖_F² / N²

Only the ``(N, N)`` similarities are compared, so student and teacher may have any feature shapes.
Row normalisation makes the loss invariant to scaling a feature and to replicating its spatial positions
(e.g. nearest-neighbour upsampling).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_batch


def _similarity(f: Tensor) -> Tensor:
    f = f.flatten(1)  # (N, D)
    return F.normalize(f @ f.T, dim=1)  # (N, N)


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity-preserving loss ``‖G_s - G_t‖_F² / N²``.

    Args:
        student: ``(N, *)`` student feature (map or vector).
        teacher: ``(N, *)`` teacher feature, any trailing shape; no gradient flows into it.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> f = torch.randn(4, 8, 2, 2)
        >>> abs(sp_loss(f, 3 * f).item()) < 1e-6
        True
    """
    check_batch(student, teacher, "sp_loss")
    with autocast_off(student):
        g_s = _similarity(student.float())
        g_t = _similarity(teacher.detach().float())
        return (g_s - g_t).pow(2).sum() / student.shape[0] ** 2


class SPLoss(nn.Module):
    """Module form of :func:`sp_loss` (no hyper-parameters).

    Example:
        >>> SPLoss()(torch.randn(4, 8, 4, 4), torch.randn(4, 16, 2, 2)).shape
        torch.Size([])
    """

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return sp_loss(student, teacher)
