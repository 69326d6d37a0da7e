"""Relational knowledge distillation: match pairwise distances and triplet angles between embeddings.

Park, Kim, Lu & Cho, "Relational Knowledge Distillation", 2019, arXiv:1904.05068.

With embeddings ``e_i`` (flattened to ``(N, D)``):

    ψ_D(i, j)    = ‖e_i - e_j‖ / μ,     μ = mean of the non-zero distances ‖e_i - e_j‖ (i ≠ j)
    ψ_A(i, j, k) = ⟨ (e_i - e_j)/‖e_i - e_j‖ , (e_k - e_j)/‖e_k - e_j‖ ⟩   (cosine of the angle at e_j)
    L_RKD        = w_D · smoothL1(ψ_D^s, ψ_D^t) + w_A · smoothL1(ψ_A^s, ψ_A^t)

Both smooth-L1 (Huber, β = 1) terms are means over all ``N²`` pairs and ``N³`` triples; degenerate
triples (``i = j`` or ``k = j``) give a zero vector and cosine 0 for both networks, so they add nothing but
count in the mean (as in the authors' code). Both terms are invariant to scaling either embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_batch


def _check_weights(distance_weight: float, angle_weight: float) -> None:
    if distance_weight < 0 or angle_weight < 0 or distance_weight + angle_weight == 0:
        raise ValueError(
            f"distance_weight and angle_weight must be >= 0 and not both 0, got {distance_weight} and "
            f"{angle_weight}. Use the paper's 25.0 and 50.0."
        )


def _distances(e: Tensor) -> Tensor:
    sq = (e.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)  # (N, N)
    nonzero = sq > 0
    # The clamp keeps sqrt's gradient finite at the zero diagonal; where() then zeroes those entries.
    d = torch.where(nonzero, sq.clamp_min(1e-12).sqrt(), 0.0)
    mean = d.sum() / nonzero.sum().clamp_min(1)
    return d / mean.clamp_min(1e-12)


def _angles(e: Tensor) -> Tensor:
    v = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)  # v[j, i] = unit(e_i - e_j), (N, N, D)
    return v @ v.transpose(1, 2)  # [j, i, k] = cosine of the angle at e_j, (N, N, N)


def rkd_loss(student: Tensor, teacher: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0) -> Tensor:
    """RKD loss: weighted distance-wise plus angle-wise relational terms.

    Args:
        student: ``(N, *)`` student embeddings, flattened to ``(N, D_s)``.
        teacher: ``(N, *)`` teacher embeddings, flattened to ``(N, D_t)``; no gradient flows into it.
        distance_weight: ``w_D >= 0``.
        angle_weight: ``w_A >= 0``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> e = torch.randn(5, 8)
        >>> abs(rkd_loss(e, 2 * e).item()) < 1e-6
        True
    """
    _check_weights(distance_weight, angle_weight)
    check_batch(student, teacher, "rkd_loss")
    s = student.float().flatten(1)
    t = teacher.detach().float().flatten(1)
    loss = s.new_zeros(())
    with autocast_off(s):
        if distance_weight:
            loss = loss + distance_weight * F.smooth_l1_loss(_distances(s), _distances(t))
        if angle_weight:
            loss = loss + angle_weight * F.smooth_l1_loss(_angles(s), _angles(t))
    return loss


class RKDLoss(nn.Module):
    """Module form of :func:`rkd_loss`; the weights are plain attributes a callback may change.

    Example:
        >>> RKDLoss(distance_weight=25.0, angle_weight=50.0)(torch.randn(8, 16), torch.randn(8, 32)).shape
        torch.Size([])
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        _check_weights(distance_weight, angle_weight)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return rkd_loss(student, teacher, self.distance_weight, self.angle_weight)
