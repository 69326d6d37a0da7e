"""Generic feature matching: MSE, L1 or cosine distance between a student and a teacher feature.

Not one paper's method: the building block behind hint-based distillation (e.g. FitNets, Romero et al.
2015, arXiv:1412.6550), with the distance picked by ``kind``:

    mse:    mean( (s - t)² )
    l1:     mean( |s - t| )
    cosine: mean_n( 1 - cos(s_n.flatten(), t_n.flatten()) )
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import check_batch, check_same_shape

MatchKind = Literal["mse", "l1", "cosine"]
_KINDS = ("mse", "l1", "cosine")


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")


def feature_match_loss(student: Tensor, teacher: Tensor, kind: MatchKind = "mse") -> Tensor:
    """Distance between a student and a teacher feature.

    Args:
        student: ``(N, *)`` student feature (connector-adapted if shapes differ).
        teacher: ``(N, *)`` teacher feature; no gradient flows into it. ``mse``/``l1`` need the same shape
            as ``student``; ``cosine`` needs the same number of elements per sample.
        kind: ``"mse"``, ``"l1"`` or ``"cosine"``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[2.0, 0.0]])
        >>> feature_match_loss(s, t, kind="l1").item(), feature_match_loss(s, t, kind="cosine").item()
        (0.5, 0.0)
    """
    _check_kind(kind)
    s, t = student.float(), teacher.detach().float()
    if kind == "cosine":
        check_batch(s, t, "feature_match_loss")
        s, t = s.flatten(1), t.flatten(1)  # (N, D)
        if s.shape != t.shape:
            raise ValueError(
                f"feature_match_loss: cosine needs the same size per sample, got student {s.shape[1]} and "
                f"teacher {t.shape[1]} elements; add a connector that maps the student feature to "
                f"{tuple(teacher.shape[1:])}."
            )
        return (1 - F.cosine_similarity(s, t, dim=1)).mean()
    check_same_shape(student, teacher, "feature_match_loss")
    return F.mse_loss(s, t) if kind == "mse" else F.l1_loss(s, t)


class FeatureMatchLoss(nn.Module):
    """Module form of :func:`feature_match_loss`.

    Example:
        >>> FeatureMatchLoss(kind="cosine")(torch.randn(4, 8, 2, 2), torch.randn(4, 8, 2, 2)).shape
        torch.Size([])
    """

    def __init__(self, kind: MatchKind = "mse") -> None:
        super().__init__()
        _check_kind(kind)
        self.kind = kind

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return feature_match_loss(student, teacher, self.kind)
