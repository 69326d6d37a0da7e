"""Decoupled knowledge distillation: weight the target-class and non-target-class parts of KD separately.

Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", 2022, arXiv:2203.08679.

With ``p = softmax(z / T)`` and ``g`` the ground-truth class, let ``b = (p_g, 1 - p_g)`` be the binary
(target vs. rest) distribution and ``p̂ = softmax(z_{≠g} / T)`` the distribution over the ``C - 1``
non-target classes. Hinton's KD splits exactly as (paper, Eq. 1-2)

    KL(p^t ‖ p^s) = KL(b^t ‖ b^s) + (1 - p^t_g) · KL(p̂^t ‖ p̂^s)
                  =      TCKD     + (1 - p^t_g) ·      NCKD

and DKD drops the coupling weight ``(1 - p^t_g)``, weighting both parts freely:

    L_DKD = α · T² · TCKD + β · T² · NCKD,        averaged over the batch

as in the authors' code (megvii-research/mdistiller, ``mdistiller/distillers/DKD.py``), whose defaults are
``α = 1``, ``β = 8``, ``T = 4``. That code removes the target class from NCKD by subtracting 1000 from its
scaled logit; here its column is dropped instead (the same distribution, without the approximation), and
``b`` is formed in log space so a confident teacher cannot produce ``log 0``.

The authors ramp the loss in linearly over the first 20 epochs (``min(epoch / 20, 1)``, epochs counted from
1). :class:`DKDLoss` stays stateless: it multiplies by its plain attribute ``scale`` (1.0 by default), which
a callback may set each epoch from :func:`dkd_warmup`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.losses.divergence import check_temperature, kl_rows
from lightning_kd.losses.logit._common import as_rows, check_logits, check_nonnegative, check_same_logits, target_rows


def _check_weights(alpha: float | Tensor, beta: float | Tensor) -> None:
    check_nonnegative("alpha", alpha, "the weight of TCKD", 1.0)
    check_nonnegative("beta", beta, "the weight of NCKD", 8.0)


def _split(logits: Tensor, targets: Tensor, others: Tensor) -> tuple[Tensor, Tensor]:
    """Log of the binary distribution ``b`` ``(M, 2)`` and log ``p̂`` over the non-target classes ``(M, C-1)``."""
    rest = logits.gather(1, others)  # (M, C-1)
    log_z = torch.logsumexp(logits, dim=1, keepdim=True)
    log_b = torch.cat([logits.gather(1, targets[:, None]), torch.logsumexp(rest, dim=1, keepdim=True)], 1) - log_z
    return log_b, F.log_softmax(rest, dim=1)


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float | Tensor = 4.0
) -> tuple[Tensor, Tensor]:
    """The two unweighted DKD terms ``(T² · TCKD, T² · NCKD)``, each averaged over the samples.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples), ``C >= 2``.
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        targets: ``(N,)`` (or ``(N, *)``) integer class indices in ``[0, C)``.
        temperature: softening temperature ``T > 0`` (a float or a 0-d tensor).

    Returns:
        Two 0-d fp32 tensors: ``T² · KL(b^t ‖ b^s)`` and ``T² · KL(p̂^t ‖ p̂^s)``.

    Example:
        >>> s = torch.tensor([[1.0, 2.0, 3.0]]); t = torch.tensor([[3.0, 2.0, 1.0]]); y = torch.tensor([0])
        >>> tckd, nckd = dkd_terms(s, t, y, temperature=1.0)
        >>> round(tckd.item(), 4), round(nckd.item(), 4)
        (0.9957, 0.4621)
    """
    check_temperature(temperature)
    check_same_logits(student_logits, teacher_logits, "dkd_loss")
    check_logits(student_logits, "dkd_loss", min_classes=2)
    y = target_rows(targets, student_logits, "dkd_loss").to(student_logits.device)
    s = as_rows(student_logits) / temperature
    t = as_rows(teacher_logits.detach()) / temperature
    rows, num_classes = s.shape
    # Indices of the non-target classes, in order: 0..C-2, shifted by one from the target on.
    others = torch.arange(num_classes - 1, device=s.device).expand(rows, -1)
    others = others + (others >= y[:, None]).long()
    log_b_s, log_hat_s = _split(s, y, others)
    log_b_t, log_hat_t = _split(t, y, others)
    scale = temperature**2
    tckd = kl_rows(log_b_t, log_b_s).mean() * scale
    nckd = kl_rows(log_hat_t, log_hat_s).mean() * scale
    return tckd, nckd


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float | Tensor = 1.0,
    beta: float | Tensor = 8.0,
    temperature: float | Tensor = 4.0,
) -> Tensor:
    """DKD loss, ``α · T² · TCKD + β · T² · NCKD`` averaged over samples (see :func:`dkd_terms`).

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``), ``C >= 2``.
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        targets: ``(N,)`` (or ``(N, *)``) integer class indices in ``[0, C)``.
        alpha: weight ``α >= 0`` of the target-class term (paper: 1.0).
        beta: weight ``β >= 0`` of the non-target-class term (paper: 8.0 on CIFAR-100).
        temperature: softening temperature ``T > 0``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[1.0, 2.0, 3.0]]); t = torch.tensor([[3.0, 2.0, 1.0]]); y = torch.tensor([0])
        >>> round(dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=1.0).item(), 4)
        4.6927
    """
    _check_weights(alpha, beta)
    tckd, nckd = dkd_terms(student_logits, teacher_logits, targets, temperature)
    return alpha * tckd + beta * nckd


def dkd_warmup(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor ``min(step / warmup_steps, 1)`` for :attr:`DKDLoss.scale` (1.0 if no warm-up).

    The authors use ``warmup_steps=20`` counted in epochs from 1, i.e. ``dkd_warmup(epoch + 1, 20)`` with a
    0-based epoch counter such as Lightning's ``trainer.current_epoch``.

    Example:
        >>> dkd_warmup(5, 20), dkd_warmup(40, 20), dkd_warmup(0, 0)
        (0.25, 1.0, 1.0)
    """
    if warmup_steps < 0 or step < 0:
        raise ValueError(
            f"step and warmup_steps must be >= 0, got step={step} and warmup_steps={warmup_steps}. "
            "Use warmup_steps=0 for no warm-up."
        )
    if warmup_steps == 0:
        return 1.0
    return min(step / warmup_steps, 1.0)


class DKDLoss(nn.Module):
    """Module form of :func:`dkd_loss`, multiplied by the plain attribute ``scale`` (warm-up factor).

    ``alpha``, ``beta`` and ``scale`` are plain attributes, so a callback may change them; e.g. ``loss.scale =
    dkd_warmup(trainer.current_epoch + 1, 20)`` reproduces the paper's warm-up. The temperature is not a setting:
    the distillation module owns ``T`` and passes it with every call. The module never reads the training progress
    itself.

    Example:
        >>> loss = DKDLoss(alpha=1.0, beta=8.0)
        >>> loss(torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,)), temperature=4.0).shape
        torch.Size([])
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0) -> None:
        super().__init__()
        _check_weights(alpha, beta)
        self.alpha = alpha
        self.beta = beta
        self.scale = 1.0

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float | Tensor = 4.0
    ) -> Tensor:
        loss = dkd_loss(student_logits, teacher_logits, targets, self.alpha, self.beta, temperature)
        return loss * self.scale
