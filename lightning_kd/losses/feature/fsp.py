"""Flow of solution procedure (FSP): match the Gram matrices between two layers of each network.

Yim, Joo, Bae & Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
Transfer Learning", CVPR 2017 (no arXiv version).

For two feature maps ``f1 (N, C1, H, W)`` and ``f2 (N, C2, H, W)`` of one network,

    G[n, i, j] = Σ_{h,w} f1[n, i, h, w] · f2[n, j, h, w] / (H·W)          G: (N, C1, C2)
    L_FSP      = mean( (G_s - G_t)² )                                   over n, i, j

If the two maps of a network differ in spatial size, the larger is adaptive-average-pooled to the smaller.
The paper sums the squares per sample; the mean keeps the scale independent of the channel counts.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off, check_maps, pool_to_common_size


def _fsp_matrix(a: Tensor, b: Tensor, what: str) -> Tensor:
    check_maps(a, b, what)
    a, b = pool_to_common_size(a, b, what)
    a, b = a.flatten(2), b.flatten(2)  # (N, C1, H*W), (N, C2, H*W)
    return a @ b.transpose(1, 2) / a.shape[-1]  # (N, C1, C2)


def fsp_loss(student_a: Tensor, student_b: Tensor, teacher_a: Tensor, teacher_b: Tensor) -> Tensor:
    """FSP loss between the student's and the teacher's ``(a, b)`` layer-pair Gram matrices.

    Args:
        student_a: ``(N, C1, H1, W1)`` student feature at the first layer of the pair.
        student_b: ``(N, C2, H2, W2)`` student feature at the second layer.
        teacher_a: ``(N, C1, H1', W1')`` teacher feature, same channel count as ``student_a``.
        teacher_b: ``(N, C2, H2', W2')`` teacher feature, same channel count as ``student_b``. No gradient
            flows into either teacher tensor.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
        >>> fsp_loss(a, b, a, b).item()
        0.0
    """
    with autocast_off(student_a):
        g_s = _fsp_matrix(student_a.float(), student_b.float(), "fsp_loss (student)")
        g_t = _fsp_matrix(teacher_a.detach().float(), teacher_b.detach().float(), "fsp_loss (teacher)")
    if g_s.shape != g_t.shape:
        raise ValueError(
            f"fsp_loss: student FSP matrix {tuple(g_s.shape)} and teacher FSP matrix {tuple(g_t.shape)} "
            "differ; (N, C1, C2) must match, so pick layers with the same channel counts in both networks "
            "or add connectors."
        )
    return (g_s - g_t).pow(2).mean()


class FSPLoss(nn.Module):
    """Module form of :func:`fsp_loss` (no hyper-parameters).

    Example:
        >>> a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
        >>> FSPLoss()(a, b, torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)).shape
        torch.Size([])
    """

    def forward(self, student_a: Tensor, student_b: Tensor, teacher_a: Tensor, teacher_b: Tensor) -> Tensor:
        return fsp_loss(student_a, student_b, teacher_a, teacher_b)
