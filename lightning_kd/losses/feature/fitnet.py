"""FitNets hint loss: mean squared error between an adapted student feature and a teacher feature.

Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets", 2015,
arXiv:1412.6550.

    L_hint = mean( (r(s) - t)² )

``r`` is the regressor ("connector") that maps the student's guided layer to the teacher's hint layer.
It lives outside this loss (the paper trains it with the student), so pass ``r(s)`` as ``student``. The
paper writes ``½‖·‖²``; the mean is used here so the scale does not grow with the feature size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import check_same_shape


def fitnet_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """FitNets hint loss, ``mean((student - teacher)²)`` over every element.

    Args:
        student: connector-adapted student feature, any shape, e.g. ``(N, C, H, W)``.
        teacher: teacher feature of the same shape; no gradient flows into it.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[1.0, 2.0], [3.0, 4.0]]); t = torch.tensor([[0.0, 2.0], [3.0, 6.0]])
        >>> fitnet_loss(s, t).item()
        1.25
    """
    check_same_shape(student, teacher, "fitnet_loss")
    return F.mse_loss(student.float(), teacher.detach().float())


class FitNetLoss(nn.Module):
    """Module form of :func:`fitnet_loss` (no hyper-parameters; the connector is a separate module).

    Example:
        >>> FitNetLoss()(torch.randn(4, 8, 2, 2), torch.randn(4, 8, 2, 2)).shape
        torch.Size([])
    """

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return fitnet_loss(student, teacher)
