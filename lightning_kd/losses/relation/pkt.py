"""Probabilistic knowledge transfer: match the conditional distributions given by a cosine kernel.

Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", 2018,
arXiv:1803.10837.

With L2-normalised embeddings ``x_i`` (flattened), the cosine kernel shifted to ``[0, 1]`` gives

    K[i, j] = (x_i · x_j + 1) / 2,      P[i, j] = K[i, j] / Σ_j K[i, j]            (N, N)
    L_PKT   = mean_ij( P_t[i, j] · log( (P_t[i, j] + ε) / (P_s[i, j] + ε) ) )

i.e. a KL divergence between teacher and student conditional probabilities (the diagonal included, as in
the authors' code), averaged over all ``N²`` entries. Student and teacher may have any feature sizes.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_batch


def _check_eps(eps: float) -> None:
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (it guards log(0)), got {eps}. Use eps=1e-7.")


def _conditional_probs(f: Tensor) -> Tensor:
    x = F.normalize(f.flatten(1), dim=1)  # (N, D)
    k = (x @ x.T + 1) / 2  # (N, N), in [0, 1]
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """PKT loss with the cosine kernel.

    Args:
        student: ``(N, *)`` student embeddings.
        teacher: ``(N, *)`` teacher embeddings; no gradient flows into it.
        eps: smoothing inside the log ratio (``> 0``).

    Returns:
        0-d tensor (fp32).

    Example:
        >>> e = torch.randn(6, 4)
        >>> pkt_loss(e, e).item()
        0.0
    """
    _check_eps(eps)
    check_batch(student, teacher, "pkt_loss")
    with autocast_off(student):
        p_s = _conditional_probs(student.float())
        p_t = _conditional_probs(teacher.detach().float())
        return (p_t * ((p_t + eps) / (p_s + eps)).log()).mean()


class PKTLoss(nn.Module):
    """Module form of :func:`pkt_loss`.

    Example:
        >>> PKTLoss()(torch.randn(8, 16), torch.randn(8, 32)).shape
        torch.Size([])
    """

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        _check_eps(eps)
        self.eps = eps

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return pkt_loss(student, teacher, self.eps)
