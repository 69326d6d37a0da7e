"""Reverse-KL and Jensen-Shannon distillation: :func:`~lightning_kd.losses.kd_loss` with another divergence of the
core (:mod:`lightning_kd.losses.divergence`).

Hinton's KD minimises the forward ``KL(p_t ‖ p_s)``, which is mass-covering: the student is pushed to put
probability wherever the teacher does. Swapping the arguments gives the mode-seeking reverse KL, studied for
distillation e.g. by Gu, Dong, Wei & Huang, "MiniLLM: Knowledge Distillation of Large Language Models", 2023,
arXiv:2306.08543; the Jensen-Shannon divergence (Lin, "Divergence measures based on the Shannon entropy", IEEE
Trans. Inf. Theory, 1991) is the symmetric, bounded middle ground. With ``p_s = softmax(s / T)``,
``p_t = softmax(t / T)``:

    L_reverse = T² · KL(p_s ‖ p_t)
    L_JS      = T² · ( ½ KL(p_t ‖ m) + ½ KL(p_s ‖ m) ),    m = (p_t + p_s) / 2,   0 <= L_JS <= T² · ln 2

both averaged over the batch.
"""

from __future__ import annotations

from torch import Tensor

from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.logit.kd import KDLoss, divergence_kd_loss

REVERSE_KL = Divergence("reverse_kl")
JENSEN_SHANNON = Divergence("jsd", beta=0.5)


def reverse_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """Reverse-KL distillation loss, ``T² · KL(softmax(s/T) ‖ softmax(t/T))`` averaged over samples.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> round(reverse_kd_loss(s, t, temperature=1.0).item(), 4)  # ln(1 + e²) - ln 2 - 1
        0.4338
    """
    return divergence_kd_loss(student_logits, teacher_logits, temperature, REVERSE_KL, "reverse_kd_loss")


def js_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """Jensen-Shannon distillation loss, ``T² · JS(p_t, p_s)`` averaged over samples; at most ``T² · ln 2``.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> round(js_kd_loss(s, t, temperature=1.0).item(), 4)
        0.0895
    """
    return divergence_kd_loss(student_logits, teacher_logits, temperature, JENSEN_SHANNON, "js_kd_loss")


class ReverseKDLoss(KDLoss):
    """:class:`KDLoss` with the reverse KL (:func:`reverse_kd_loss`).

    Example:
        >>> ReverseKDLoss()(torch.randn(8, 10), torch.randn(8, 10), temperature=4.0).shape
        torch.Size([])
    """

    def __init__(self) -> None:
        super().__init__(REVERSE_KL)


class JSKDLoss(KDLoss):
    """:class:`KDLoss` with the symmetric Jensen-Shannon divergence (:func:`js_kd_loss`).

    Example:
        >>> JSKDLoss()(torch.randn(8, 10), torch.randn(8, 10), temperature=4.0).shape
        torch.Size([])
    """

    def __init__(self) -> None:
        super().__init__(JENSEN_SHANNON)
