"""Variational information distillation: Gaussian log-likelihood of the teacher feature under the student.

Ahn, Hu, Damianou, Lawrence & Dai, "Variational Information Distillation for Knowledge Transfer", 2019,
arXiv:1904.05835.

A regressor ``μ(s)`` predicts the teacher feature from the student's; each teacher channel ``c`` has a
learnable variance ``σ²_c = softplus(α_c) + ε`` shared over positions. The loss is the negative
log-likelihood without its constant, averaged over every element:

    L_VID = mean( ½ ( (μ(s) - t)² / σ²_c + log σ²_c ) )

Minimising it maximises a variational lower bound on the mutual information between the two features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import check_batch, check_same_shape, pool_to_common_size


def _check_eps(eps: float) -> None:
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (it keeps the variance from 0), got {eps}. Use eps=1e-5.")


def vid_loss(pred_mean: Tensor, teacher: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """VID negative log-likelihood of ``teacher`` under ``N(pred_mean, softplus(log_scale) + eps)``.

    Args:
        pred_mean: ``(N, C_t, *)`` regressed student feature ``μ(s)`` (``*``: spatial dims, maybe none).
        teacher: same shape as ``pred_mean``; no gradient flows into it.
        log_scale: ``(C_t,)`` per-channel pre-softplus variance, broadcast over the spatial dims.
        eps: floor added to the variance (``> 0``).

    Returns:
        0-d tensor (fp32).

    Example:
        >>> t = torch.zeros(2, 3, 4, 4); log_scale = torch.zeros(3)
        >>> round(vid_loss(t, t, log_scale).item(), 3)  # ½ log(softplus(0) + 1e-5) ≈ ½ log(log 2)
        -0.183
    """
    _check_eps(eps)
    check_same_shape(pred_mean, teacher, "vid_loss")
    if log_scale.shape != (teacher.shape[1],):
        raise ValueError(
            f"vid_loss: log_scale {tuple(log_scale.shape)} must be ({teacher.shape[1]},), one entry per "
            "teacher channel."
        )
    mean = pred_mean.float()
    t = teacher.detach().float()
    var = F.softplus(log_scale.float()) + eps
    var = var.view(1, -1, *([1] * (t.dim() - 2)))  # (1, C_t, 1, ...)
    return (0.5 * ((mean - t).pow(2) / var + var.log())).mean()


def _check_channels(**channels: int | None) -> None:
    for name, value in channels.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}; pass the feature's channel count.")


class VIDLoss(nn.Module):
    """VID with its trainable parts: a 1x1-conv regressor ``μ`` and the per-channel ``log_scale``.

    The regressor is ``conv1x1 → ReLU → conv1x1 → ReLU → conv1x1`` (``C_s → hidden → hidden → C_t``).
    Inputs may be maps ``(N, C, H, W)`` or vectors ``(N, C)``, which are treated as 1x1 maps. If spatial
    sizes differ, the larger map is adaptive-average-pooled to the smaller size first.

    Args:
        student_channels: ``C_s``.
        teacher_channels: ``C_t``.
        hidden_channels: width of the regressor; defaults to ``C_t``.
        init_pred_var: initial variance ``softplus(log_scale) + eps`` (``> eps``).
        eps: variance floor (``> 0``).

    Example:
        >>> loss = VIDLoss(student_channels=16, teacher_channels=32)
        >>> loss(torch.randn(4, 16, 8, 8), torch.randn(4, 32, 8, 8)).shape
        torch.Size([])
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        hidden_channels: int | None = None,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        _check_channels(
            student_channels=student_channels, teacher_channels=teacher_channels, hidden_channels=hidden_channels
        )
        _check_eps(eps)
        if init_pred_var <= eps:
            raise ValueError(f"init_pred_var must be > eps={eps}, got {init_pred_var}. Use e.g. 5.0.")
        hidden = teacher_channels if hidden_channels is None else hidden_channels
        self.student_channels = student_channels
        self.eps = eps
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, hidden, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(hidden, teacher_channels, kernel_size=1),
        )
        # Inverse softplus of (init_pred_var - eps), written to stay finite for large variances.
        y = init_pred_var - eps
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), y + math.log(-math.expm1(-y))))

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        check_batch(student, teacher, "VIDLoss")
        if student.shape[1] != self.student_channels:
            raise ValueError(
                f"VIDLoss: student has {student.shape[1]} channels but the regressor expects "
                f"{self.student_channels}; set student_channels={student.shape[1]}."
            )
        if teacher.shape[1] != self.log_scale.shape[0]:
            raise ValueError(
                f"VIDLoss: teacher has {teacher.shape[1]} channels but log_scale has {self.log_scale.shape[0]}; "
                f"set teacher_channels={teacher.shape[1]}."
            )
        student, teacher = pool_to_common_size(student, teacher, "VIDLoss")
        n, c, *spatial = student.shape
        x = student.to(self.log_scale.dtype).reshape(n, c, -1, 1)  # 1x1 convs act per position
        pred_mean = self.regressor(x).reshape(n, -1, *spatial)
        return vid_loss(pred_mean, teacher, self.log_scale, self.eps)
