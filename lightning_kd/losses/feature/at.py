"""Attention transfer: match the L2-normalised spatial attention maps of student and teacher.

Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional
Neural Networks via Attention Transfer", 2017, arXiv:1612.03928.

    at(f)  = normalize( mean_c |f_c|^p ).flatten()           (one unit vector per sample)
    L_AT   = mean( (at(s) - at(t))² )                         over samples and positions

Channel counts may differ (channels are averaged away). If spatial sizes differ, the larger map is
adaptive-average-pooled to the smaller size. Because ``at`` is normalised, the loss is invariant to
scaling either feature map by a positive constant.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import check_maps, pool_to_common_size


def _check_p(p: float) -> None:
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}. Use p=2.0 as in the paper.")


def _attention(f: Tensor, p: float) -> Tensor:
    return F.normalize(f.abs().pow(p).mean(dim=1).flatten(1), dim=1)  # (N, H*W)


def at_loss(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """Attention-transfer loss between two feature maps.

    Args:
        student: ``(N, C_s, H_s, W_s)`` student feature map.
        teacher: ``(N, C_t, H_t, W_t)`` teacher feature map; no gradient flows into it.
        p: exponent of the attention map ``mean_c |f_c|^p`` (``p > 0``).

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.ones(1, 3, 2, 2); t = torch.ones(1, 8, 4, 4)
        >>> at_loss(s, t).item()
        0.0
    """
    _check_p(p)
    check_maps(student, teacher, "at_loss")
    s, t = pool_to_common_size(student.float(), teacher.detach().float(), "at_loss")
    return (_attention(s, p) - _attention(t, p)).pow(2).mean()


class ATLoss(nn.Module):
    """Module form of :func:`at_loss`.

    Example:
        >>> ATLoss(p=2.0)(torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4)).shape
        torch.Size([])
    """

    def __init__(self, p: float = 2.0) -> None:
        super().__init__()
        _check_p(p)
        self.p = p

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return at_loss(student, teacher, self.p)
