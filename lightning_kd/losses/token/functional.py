"""Named forms of :func:`~lightning_kd.losses.token.token_divergence`, one per divergence (like
``torch.nn.functional``): each returns per-token values ``(N,)`` (masked tokens 0) and takes ``temperature``,
``mask``, ``vocab_size`` and ``scale_by_t2`` as keywords. The formulas and papers:
:mod:`lightning_kd.losses.divergence`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.token.divergences import token_divergence


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, **options: Any) -> Tensor:
    """Per-token ``T²·KL(p_t ‖ p_s)`` (mass-covering).

    Example:
        >>> forward_kl(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 0.0]]))  # ln(1 + e²) - ln 2 - 1
        tensor([0.4338])
    """
    return token_divergence(student_logits, teacher_logits, Divergence("forward_kl"), **options)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, **options: Any) -> Tensor:
    """Per-token ``T²·KL(p_s ‖ p_t)`` (mode-seeking).

    Example:
        >>> reverse_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # ln(1 + e²) - ln 2 - 1
        tensor([0.4338])
    """
    return token_divergence(student_logits, teacher_logits, Divergence("reverse_kl"), **options)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, **options: Any) -> Tensor:
    """Per-token generalised JSD of GKD. It jumps at the endpoints: ``beta=0`` is DEFINED as forward KL and
    ``beta=1`` as reverse KL (see :class:`~lightning_kd.losses.divergence.Divergence`).

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> torch.equal(generalized_jsd(s, t, beta=0.0), forward_kl(s, t))
        True
    """
    return token_divergence(student_logits, teacher_logits, Divergence("jsd", beta=beta), **options)


def skew_forward_kl(student_logits: Tensor, teacher_logits: Tensor, skew: float = 0.1, **options: Any) -> Tensor:
    """Per-token DistiLLM skew KL ``KL(p_t ‖ α·p_t + (1 − α)·p_s)``, ``α = skew``.

    Example:
        >>> skew_forward_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]), skew=0.1).shape
        torch.Size([1])
    """
    return token_divergence(student_logits, teacher_logits, Divergence("skew_forward_kl", skew=skew), **options)


def skew_reverse_kl(student_logits: Tensor, teacher_logits: Tensor, skew: float = 0.1, **options: Any) -> Tensor:
    """Per-token DistiLLM skew reverse KL ``KL(p_s ‖ α·p_s + (1 − α)·p_t)``, ``α = skew``.

    Example:
        >>> skew_reverse_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]), skew=0.1).shape
        torch.Size([1])
    """
    return token_divergence(student_logits, teacher_logits, Divergence("skew_reverse_kl", skew=skew), **options)


def total_variation(student_logits: Tensor, teacher_logits: Tensor, **options: Any) -> Tensor:
    """Per-token total variation ``½ Σ_v |p_t − p_s|``, in ``[0, 1]`` before ``T²``.

    Example:
        >>> total_variation(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # e²/(1 + e²) - ½
        tensor([0.3808])
    """
    return token_divergence(student_logits, teacher_logits, Divergence("tv"), **options)
