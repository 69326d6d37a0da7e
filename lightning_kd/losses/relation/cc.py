"""Correlation congruence: match the sample-correlation matrices of student and teacher embeddings.

Peng, Jin, Liu, Zhou, Wu, Liu, Li & Zhang, "Correlation Congruence for Knowledge Distillation", 2019,
arXiv:1904.01802.

On L2-normalised embeddings ``‖x‖ = 1``, the Gaussian RBF kernel ``exp(-γ‖x - y‖²) = exp(-2γ) exp(2γ x·y)``
is replaced by its order-``P`` Taylor expansion (paper, Eq. 9):

    k(x, y) ≈ Σ_{p=0}^{P} exp(-2γ) (2γ)^p / p! · (x·y)^p,       C[i, j] = k(x_i, x_j)     (N, N)
    L_CC    = ‖C_s - C_t‖_F² / N²

Student and teacher may have any feature sizes; only the ``(N, N)`` matrices are compared.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_batch


def _check_kernel(gamma: float, order: int) -> None:
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma}. Use gamma=0.4 as in the paper.")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1 (order 0 is a constant), got {order!r}. Use order=2.")


def _correlation(f: Tensor, gamma: float, order: int) -> Tensor:
    x = F.normalize(f.flatten(1), dim=1)  # (N, D)
    sim = x @ x.T  # (N, N)
    c = math.exp(-2 * gamma)
    return sum(c * (2 * gamma) ** p / math.factorial(p) * sim.pow(p) for p in range(order + 1))


def cc_loss(student: Tensor, teacher: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """Correlation-congruence loss with the Taylor-expanded Gaussian RBF kernel.

    Args:
        student: ``(N, *)`` student embeddings.
        teacher: ``(N, *)`` teacher embeddings; no gradient flows into it.
        gamma: RBF bandwidth ``γ > 0``.
        order: Taylor order ``P >= 1``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> e = torch.randn(6, 4)
        >>> cc_loss(e, e).item()
        0.0
    """
    _check_kernel(gamma, order)
    check_batch(student, teacher, "cc_loss")
    with autocast_off(student):
        c_s = _correlation(student.float(), gamma, order)
        c_t = _correlation(teacher.detach().float(), gamma, order)
        return (c_s - c_t).pow(2).sum() / student.shape[0] ** 2


class CCLoss(nn.Module):
    """Module form of :func:`cc_loss`.

    Example:
        >>> CCLoss(gamma=0.4, order=2)(torch.randn(8, 16), torch.randn(8, 32)).shape
        torch.Size([])
    """

    def __init__(self, gamma: float = 0.4, order: int = 2) -> None:
        super().__init__()
        _check_kernel(gamma, order)
        self.gamma = gamma
        self.order = order

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return cc_loss(student, teacher, self.gamma, self.order)
