"""Multi-teacher logit distillation: the teachers' distributions combined by weights.

- :func:`ensemble_kd_loss`: Hinton KD (arXiv:1503.02531) from the teachers' weighted average distribution
  (You, Xu, Xu & Tao, "Learning from Multiple Teacher Networks", KDD 2017, average the teachers' soft
  targets; weights ``1/K`` or given).
- :func:`per_teacher_kd`: one KD term per teacher and sample, for weighted sums of per-teacher terms.
- :func:`confidence_weights`: CA-MKD's per-sample teacher weights (Zhang, Chen & Wang, "Confidence-Aware
  Multi-Teacher Knowledge Distillation", ICASSP 2022, arXiv:2201.00007; official code Rorozhl/CA-MKD).

Shapes: student ``(N, C)``, teachers stacked ``(K, N, C)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.divergence import kl_rows


def confidence_weights(teacher_logits: Tensor, targets: Tensor) -> Tensor:
    """CA-MKD per-sample teacher weights ``w_k = (1 − softmax_k(CE_k)) / (K − 1)``, ``CE_k = CE(t_k, y)``.

    Teachers closer to the label weigh more. ``softmax_k`` runs over teachers, per sample, as in the official
    code (not ``softmax(−CE)``, though both agree for K = 2).

    Args:
        teacher_logits: ``(K, N, C)``.
        targets: ``(N,)`` class indices.

    Returns:
        ``(K, N)`` fp32; every column sums to 1; ones when ``K = 1``.

    Example:
        >>> t = torch.tensor([[[4.0, 0.0]], [[0.0, 4.0]]])  # teacher 0 right, teacher 1 wrong
        >>> w = confidence_weights(t, torch.tensor([0]))
        >>> bool(w[0, 0] > w[1, 0]), round(float(w.sum()), 6)
        (True, 1.0)
    """
    k = teacher_logits.shape[0]
    if k == 1:
        return teacher_logits.new_ones(teacher_logits.shape[:2], dtype=torch.float32)
    ce = torch.stack([F.cross_entropy(t.float(), targets, reduction="none") for t in teacher_logits])  # (K, N)
    return (1.0 - ce.softmax(0)) / (k - 1)


def ensemble_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, temperature: float | Tensor = 4.0
) -> Tensor:
    """``T² · KL(Σ_k w_k softmax(t_k/T) ‖ softmax(s/T))``, averaged over samples.

    The mixture is formed in probability space (log-sum-exp of ``log w_k + log p_k``), so it is exactly
    :func:`~lightning_kd.losses.kd_loss` for one teacher or for K identical teachers.

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(K, N, C)``; no gradient flows into it.
        weights: ``(K,)``, non-negative, summing to 1.
        temperature: ``T > 0``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s, t = torch.zeros(2, 3), torch.randn(1, 2, 3)
        >>> from lightning_kd.losses import kd_loss
        >>> bool(torch.isclose(ensemble_kd_loss(s, t, torch.ones(1)), kd_loss(s, t[0])))
        True
    """
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (K, N, C)
    log_mix = torch.logsumexp(weights.float().log()[:, None, None] + log_p_t, dim=0)  # (N, C): log Σ_k w_k p_k
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return kl_rows(log_mix, log_p_s).mean() * temperature**2


def per_teacher_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """``T² · KL(softmax(t_k/T) ‖ softmax(s/T))`` for every teacher ``k`` and sample ``n``.

    Args:
        student_logits: ``(N, C)``.
        teacher_logits: ``(K, N, C)``; no gradient flows into it.
        temperature: ``T > 0``.

    Returns:
        ``(K, N)`` fp32; the mean of row ``k`` is ``kd_loss(student_logits, teacher_logits[k])``.

    Example:
        >>> per_teacher_kd(torch.zeros(4, 3), torch.randn(2, 4, 3)).shape
        torch.Size([2, 4])
    """
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (K, N, C)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, C), broadcast over K
    return kl_rows(log_p_t, log_p_s) * temperature**2
