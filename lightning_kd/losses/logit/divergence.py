"""Other divergences between temperature-softened distributions: reverse KL and Jensen-Shannon.

Hinton's KD (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531) minimises the forward ``KL(p_t ‖ p_s)``, which
is mass-covering: the student is pushed to put probability wherever the teacher does. Swapping the arguments
gives the mode-seeking reverse KL, studied for distillation e.g. by Gu, Dong, Wei & Huang, "MiniLLM:
Knowledge Distillation of Large Language Models", 2023, arXiv:2306.08543; the Jensen-Shannon divergence
(Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory, 1991) is the symmetric,
bounded middle ground. With ``p_s = softmax(s / T)`` and ``p_t = softmax(t / T)``:

    L_reverse = T² · KL(p_s ‖ p_t)
    L_JS      = T² · ( ½ KL(p_t ‖ m) + ½ KL(p_s ‖ m) ),    m = (p_t + p_s) / 2,   0 <= L_JS <= T² · ln 2

both averaged over the batch, with the same ``T²`` gradient scaling as :func:`kd_loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.logit._common import as_rows, check_same_logits, kl_rows
from lightning_kd.losses.logit.kd import TemperatureLoss, _check_temperature


def _log_probs(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor, what: str):
    _check_temperature(temperature)
    check_same_logits(student_logits, teacher_logits, what)
    log_p_s = F.log_softmax(as_rows(student_logits) / temperature, dim=1)
    log_p_t = F.log_softmax(as_rows(teacher_logits.detach()) / temperature, dim=1)
    return log_p_s, log_p_t


def reverse_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """Reverse-KL distillation loss, ``T² · KL(softmax(s/T) ‖ softmax(t/T))`` averaged over samples.

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples).
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        temperature: softening temperature ``T > 0``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> round(reverse_kd_loss(s, t, temperature=1.0).item(), 4)  # ln(1 + e²) - ln 2 - 1
        0.4338
    """
    log_p_s, log_p_t = _log_probs(student_logits, teacher_logits, temperature, "reverse_kd_loss")
    return kl_rows(log_p_s, log_p_t).mean() * temperature**2


def js_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """Jensen-Shannon distillation loss, ``T² · JS(p_t, p_s)`` averaged over samples; at most ``T² · ln 2``.

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples).
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        temperature: softening temperature ``T > 0``.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> round(js_kd_loss(s, t, temperature=1.0).item(), 4)
        0.0895
    """
    log_p_s, log_p_t = _log_probs(student_logits, teacher_logits, temperature, "js_kd_loss")
    log_m = torch.logaddexp(log_p_s, log_p_t) - math.log(2.0)  # log((p_s + p_t) / 2), stable
    js = 0.5 * kl_rows(log_p_t, log_m) + 0.5 * kl_rows(log_p_s, log_m)
    return js.mean() * temperature**2


class ReverseKDLoss(TemperatureLoss):
    """Module form of :func:`reverse_kd_loss`; ``temperature`` is a buffer a scheduler may overwrite.

    Example:
        >>> ReverseKDLoss(temperature=4.0)(torch.randn(8, 10), torch.randn(8, 10)).shape
        torch.Size([])
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return reverse_kd_loss(student_logits, teacher_logits, self.t)


class JSKDLoss(TemperatureLoss):
    """Module form of :func:`js_kd_loss`; ``temperature`` is a buffer a scheduler may overwrite.

    Example:
        >>> JSKDLoss(temperature=4.0)(torch.randn(8, 10), torch.randn(8, 10)).shape
        torch.Size([])
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return js_kd_loss(student_logits, teacher_logits, self.t)
