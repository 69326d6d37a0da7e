"""Named forms of :func:`token_divergence`, one per divergence (like ``torch.nn.functional``).

Each returns per-token values ``(N,)`` (masked tokens 0) and takes the options of
:func:`~lightning_kd.losses.token.divergences.token_divergence`; the formulas and papers are in that module.
"""

from __future__ import annotations

from torch import Tensor

from lightning_kd.losses.token.divergences import token_divergence


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token ``T²·KL(p_t ‖ p_s)`` (mass-covering): :func:`token_divergence` with ``kind="forward_kl"``.

    Example:
        >>> forward_kl(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 0.0]]))  # ln(1 + e²) - ln 2 - 1
        tensor([0.4338])
    """
    return token_divergence(
        student_logits,
        teacher_logits,
        "forward_kl",
        temperature=temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token ``T²·KL(p_s ‖ p_t)`` (mode-seeking): :func:`token_divergence` with ``kind="reverse_kl"``.

    Example:
        >>> reverse_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # ln(1 + e²) - ln 2 - 1
        tensor([0.4338])
    """
    return token_divergence(
        student_logits,
        teacher_logits,
        "reverse_kl",
        temperature=temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 0.5,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token generalised JSD of GKD: :func:`token_divergence` with ``kind="jsd"``. It jumps at the
    endpoints: ``beta=0`` is DEFINED as forward KL and ``beta=1`` as reverse KL (see :func:`token_divergence`).

    Example:
        >>> s = torch.tensor([[0.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
        >>> torch.equal(generalized_jsd(s, t, beta=0.0), forward_kl(s, t))
        True
    """
    return token_divergence(
        student_logits,
        teacher_logits,
        "jsd",
        beta=beta,
        temperature=temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )


def skew_forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    skew: float = 0.1,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token DistiLLM skew KL ``KL(p_t ‖ α·p_t + (1 − α)·p_s)``, ``α = skew``: ``kind="skew_forward_kl"``.

    Example:
        >>> skew_forward_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]), skew=0.1).shape
        torch.Size([1])
    """
    return token_divergence(
        student_logits,
        teacher_logits,
        "skew_forward_kl",
        skew=skew,
        temperature=temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )


def skew_reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    skew: float = 0.1,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token DistiLLM skew reverse KL ``KL(p_s ‖ α·p_s + (1 − α)·p_t)``, ``α = skew``:
    ``kind="skew_reverse_kl"``.

    Example:
        >>> skew_reverse_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]), skew=0.1).shape
        torch.Size([1])
    """
    return token_divergence(
        student_logits,
        teacher_logits,
        "skew_reverse_kl",
        skew=skew,
        temperature=temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )


def total_variation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token total variation ``½ Σ_v |p_t − p_s|``, in ``[0, 1]`` before ``T²``: ``kind="tv"``.

    Example:
        >>> total_variation(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]))  # e²/(1 + e²) - ½
        tensor([0.3808])
    """
    return token_divergence(
        student_logits,
        teacher_logits,
        "tv",
        temperature=temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )
