"""Label smoothing: cross-entropy against a target mixed with the uniform distribution (no teacher).

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for Computer Vision",
2016, arXiv:1512.00567 (§7). Yuan, Tay, Li, Wang & Feng, "Revisiting Knowledge Distillation via Label
Smoothing Regularization", 2020, arXiv:1909.11723, read it as KD from a uniform "virtual teacher": the
teacher-free baseline a distillation method should beat.

With ``p = softmax(z)``, ``y`` the class index and ``ε`` the smoothing:

    q    = (1 - ε) · onehot(y) + ε / C
    L_LS = -Σ_c q_c log p_c = (1 - ε) · (-log p_y) + ε · mean_c(-log p_c),   averaged over the batch

identical to ``F.cross_entropy(z, y, label_smoothing=ε)``. Unlike the other losses it takes the student
logits and the targets only.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses.logit._common import as_rows, check_logits, target_rows


def _check_smoothing(smoothing: float) -> None:
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}. Use e.g. smoothing=0.1.")


def label_smoothing_loss(student_logits: Tensor, targets: Tensor, smoothing: float = 0.1) -> Tensor:
    """Cross-entropy with uniform label smoothing, averaged over samples.

    The logits are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples).
        targets: ``(N,)`` (or ``(N, *)``) integer class indices in ``[0, C)``.
        smoothing: ``ε`` in ``[0, 1]``; 0 gives plain cross-entropy.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> z = torch.tensor([[0.0, 0.0]]); y = torch.tensor([0])
        >>> round(label_smoothing_loss(z, y, smoothing=0.1).item(), 4)  # ln 2: both classes have p = 1/2
        0.6931
    """
    _check_smoothing(smoothing)
    check_logits(student_logits, "label_smoothing_loss")
    y = target_rows(targets, student_logits, "label_smoothing_loss").to(student_logits.device)
    log_p = F.log_softmax(as_rows(student_logits), dim=1)
    nll = -log_p.gather(1, y[:, None]).squeeze(1)
    uniform = -log_p.mean(dim=1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


class LabelSmoothingLoss(nn.Module):
    """Module form of :func:`label_smoothing_loss`; ``smoothing`` is a plain attribute.

    Example:
        >>> LabelSmoothingLoss(smoothing=0.1)(torch.randn(8, 10), torch.randint(0, 10, (8,))).shape
        torch.Size([])
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        _check_smoothing(smoothing)
        self.smoothing = smoothing

    def forward(self, student_logits: Tensor, targets: Tensor) -> Tensor:
        return label_smoothing_loss(student_logits, targets, self.smoothing)
