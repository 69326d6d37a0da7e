"""Neuron selectivity transfer: MMD between the sets of per-channel activation patterns.

Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017,
arXiv:1707.01219.

Each channel's spatial map is flattened and L2-normalised, giving ``C`` unit vectors per sample. With the
polynomial kernel ``k(a, b) = (a·b + c)^d`` the squared MMD between the teacher set ``{t_i}`` and the
student set ``{s_j}`` is, per sample,

    MMD² = mean_ij k(t_i, t_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(s_i, t_j)

and the loss is its average over the batch. Channel counts may differ; spatial sizes must match, so the
larger map is adaptive-average-pooled to the smaller size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_maps, pool_to_common_size


def _check_kernel(degree: int, constant: float) -> None:
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be an int >= 1, got {degree!r}. Use degree=2 as in the paper.")
    if constant < 0:
        raise ValueError(f"constant must be >= 0 (else the kernel is not PSD), got {constant}. Use 0.0.")


def _poly_kernel(a: Tensor, b: Tensor, degree: int, constant: float) -> Tensor:
    return (a @ b.transpose(1, 2) + constant).pow(degree).mean(dim=(1, 2))  # (N,)


def nst_loss(student: Tensor, teacher: Tensor, degree: int = 2, constant: float = 0.0) -> Tensor:
    """Neuron-selectivity-transfer loss (squared MMD, polynomial kernel).

    Args:
        student: ``(N, C_s, H_s, W_s)`` student feature map.
        teacher: ``(N, C_t, H_t, W_t)`` teacher feature map; no gradient flows into it.
        degree: kernel degree ``d`` (int ``>= 1``).
        constant: kernel offset ``c`` (``>= 0``).

    Returns:
        0-d tensor (fp32).

    Example:
        >>> f = torch.randn(2, 4, 3, 3)
        >>> abs(nst_loss(f, f).item()) < 1e-6
        True
    """
    _check_kernel(degree, constant)
    check_maps(student, teacher, "nst_loss")
    s, t = pool_to_common_size(student.float(), teacher.detach().float(), "nst_loss")
    s = F.normalize(s.flatten(2), dim=2)  # (N, C_s, H*W)
    t = F.normalize(t.flatten(2), dim=2)  # (N, C_t, H*W)
    with autocast_off(s):
        k_tt = _poly_kernel(t, t, degree, constant)
        k_ss = _poly_kernel(s, s, degree, constant)
        k_st = _poly_kernel(s, t, degree, constant)
    return (k_tt + k_ss - 2 * k_st).mean()


class NSTLoss(nn.Module):
    """Module form of :func:`nst_loss`.

    Example:
        >>> NSTLoss()(torch.randn(4, 16, 4, 4), torch.randn(4, 32, 4, 4)).shape
        torch.Size([])
    """

    def __init__(self, degree: int = 2, constant: float = 0.0) -> None:
        super().__init__()
        _check_kernel(degree, constant)
        self.degree = degree
        self.constant = constant

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return nst_loss(student, teacher, self.degree, self.constant)
