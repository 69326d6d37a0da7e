"""Token-level (language-model) divergences between a student's and a teacher's next-token distributions.

Every function takes logits of shape ``(N, V)`` (N tokens, V vocabulary entries; any leading dims work:
``(*, V) -> (*,)``), an optional ``mask`` of valid tokens, and returns one value PER TOKEN, with masked
tokens set to 0. A caller sums them and divides by its own count of valid tokens: with gradient
accumulation or DDP that count is the one over the whole optimizer step, not over one micro-batch
(:func:`reduce_token_loss` does the one-batch case). With ``p_s = softmax(s / T)``, ``p_t = softmax(t / T)``:

    forward_kl       KL(p_t ‖ p_s) = Σ_v p_t (log p_t − log p_s)               Hinton et al., 2015, arXiv:1503.02531
    reverse_kl       KL(p_s ‖ p_t)                                 Gu et al., "MiniLLM", 2023, arXiv:2306.08543
    jsd              β·KL(p_t ‖ m) + (1 − β)·KL(p_s ‖ m),  m = β·p_t + (1 − β)·p_s
                     Agarwal et al., "On-Policy Distillation of Language Models: Learning from
                     Self-Generated Mistakes" (GKD), 2024, arXiv:2306.13649
    skew_forward_kl  KL(p_t ‖ α·p_t + (1 − α)·p_s)          Ko et al., "DistiLLM", 2024, arXiv:2402.03898
    skew_reverse_kl  KL(p_s ‖ α·p_s + (1 − α)·p_t)                                       (same paper)
    tv               ½ Σ_v |p_t − p_s|                                                total variation

each multiplied by ``T²`` (Hinton's scaling, which keeps the gradient size roughly independent of ``T``)
unless ``scale_by_t2=False``. Every mixture is formed in probability space, ``log m = logsumexp(log β +
log p_t, log(1 − β) + log p_s)``, never by averaging logits or log-probabilities (the bug of TRL issue #2202).
All arithmetic is fp32 whatever the input dtype, and no gradient flows into the teacher.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TOKEN_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tv")


def check_token_options(kind: str, beta: float, skew: float, temperature: float | Tensor) -> None:
    """Raise ``ValueError`` naming the bad value unless the options of :func:`token_divergence` are valid."""
    if kind not in TOKEN_DIVERGENCES:
        raise ValueError(f"unknown token divergence kind={kind!r}; choose one of {', '.join(TOKEN_DIVERGENCES)}.")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}; beta=0 is forward KL, beta=1 reverse KL, e.g. 0.5.")
    if not 0.0 <= skew < 1.0:
        raise ValueError(f"skew must be in [0, 1), got {skew}; skew=0 is the plain KL, DistiLLM uses 0.1.")
    if not isinstance(temperature, Tensor) and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}. Use e.g. temperature=1.0.")


def _vocab_width(student_width: int, teacher_width: int, vocab_size: int | None) -> int:
    if vocab_size is None:
        if student_width != teacher_width:
            raise ValueError(
                f"student logits have {student_width} vocabulary columns and teacher logits {teacher_width}; "
                "pass vocab_size=<the shared tokenizer's size> (e.g. len(tokenizer)) to compare only those "
                "columns and drop the padding ids of the wider head."
            )
        return student_width
    if not 0 < vocab_size <= min(student_width, teacher_width):
        raise ValueError(
            f"vocab_size={vocab_size} must be in [1, {min(student_width, teacher_width)}] for student logits "
            f"with {student_width} and teacher logits with {teacher_width} columns; use the tokenizer's size."
        )
    return vocab_size


def _log_probs(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor, vocab_size: int | None
) -> tuple[Tensor, Tensor]:
    """fp32 ``(log p_s, log p_t)`` over the first ``vocab_size`` columns; the teacher side is detached."""
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must have the same tokens (all dims but the last); align the two sequences first."
        )
    v = _vocab_width(student_logits.shape[-1], teacher_logits.shape[-1], vocab_size)
    s = student_logits[..., :v].float()
    t = teacher_logits.detach()[..., :v].float()
    if isinstance(temperature, Tensor) or temperature != 1.0:
        s, t = s / temperature, t / temperature
    return F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p ‖ q)`` of each row from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_mixture(log_p: Tensor, log_q: Tensor, weight: float) -> Tensor:
    """``log(weight·p + (1 − weight)·q)`` in probability space, for ``0 < weight < 1``."""
    return torch.logaddexp(log_p + math.log(weight), log_q + math.log1p(-weight))


def _per_token(kind: str, log_p_s: Tensor, log_p_t: Tensor, beta: float, skew: float) -> Tensor:
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0) or (kind == "skew_forward_kl" and skew == 0.0):
        return _kl(log_p_t, log_p_s)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0) or (kind == "skew_reverse_kl" and skew == 0.0):
        return _kl(log_p_s, log_p_t)
    if kind == "jsd":
        log_m = _log_mixture(log_p_t, log_p_s, beta)
        return beta * _kl(log_p_t, log_m) + (1.0 - beta) * _kl(log_p_s, log_m)
    if kind == "skew_forward_kl":
        return _kl(log_p_t, _log_mixture(log_p_t, log_p_s, skew))
    if kind == "skew_reverse_kl":
        return _kl(log_p_s, _log_mixture(log_p_s, log_p_t, skew))
    return 0.5 * (log_p_t.exp() - log_p_s.exp()).abs().sum(-1)  # tv


def token_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: str = "forward_kl",
    *,
    beta: float = 0.5,
    skew: float = 0.1,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token divergence ``kind`` between student and teacher next-token distributions (formulas above).

    ``kind="jsd"`` is the generalised Jensen-Shannon divergence of GKD (Agarwal et al., 2024,
    arXiv:2306.13649) with TRL's convention: ``beta`` weighs the teacher in the mixture ``m = β·p_t +
    (1 − β)·p_s``; ``β = 0.5`` is the classical symmetric JSD (at most ``ln 2``). As ``β → 0`` or ``β → 1`` the
    JSD itself tends to 0 (``JSD_β / β → KL(p_t ‖ p_s)``, ``JSD_β / (1 − β) → KL(p_s ‖ p_t)``), but at the
    endpoints it is DEFINED as those limits: ``β = 0`` gives the full forward KL and ``β = 1`` the full reverse
    KL. The function therefore jumps at ``β = 0`` and ``β = 1``; a ``β`` schedule should not sweep onto them.

    Args:
        student_logits: ``(N, V_s)`` (or ``(*, V_s)``); any dtype, computed in fp32.
        teacher_logits: ``(N, V_t)``; no gradient flows into it.
        kind: one of ``forward_kl``, ``reverse_kl``, ``jsd``, ``skew_forward_kl``, ``skew_reverse_kl``, ``tv``.
        beta: JSD teacher weight in ``[0, 1]`` (used by ``jsd`` only).
        skew: DistiLLM skew ``α`` in ``[0, 1)`` (used by the ``skew_*`` kinds); ``α = 0`` is the plain KL.
        temperature: ``T > 0``; both logits are divided by ``T`` before the softmax.
        mask: ``(N,)`` bool or 0/1, True for valid tokens; other tokens give 0. ``None``: all are valid.
        vocab_size: compare only the first ``vocab_size`` columns of both logits (heads padded past the
            tokenizer's size); required when ``V_s != V_t``.
        scale_by_t2: multiply the result by ``T²`` (default), as in Hinton's KD.

    Returns:
        ``(N,)`` fp32 per-token values, 0 where ``mask`` is False.

    Example:
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 2.0]]); t = torch.tensor([[0.0, 2.0], [1.0, 2.0]])
        >>> token_divergence(s, t, "jsd", beta=0.5, mask=torch.tensor([True, False]))
        tensor([0.0895, 0.0000])
    """
    check_token_options(kind, beta, skew, temperature)
    log_p_s, log_p_t = _log_probs(student_logits, teacher_logits, temperature, vocab_size)
    values = _per_token(kind, log_p_s, log_p_t, beta, skew)
    if scale_by_t2 and (isinstance(temperature, Tensor) or temperature != 1.0):
        values = values * temperature**2
    if mask is not None:
        if mask.shape != values.shape:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match the logits' tokens {tuple(values.shape)}; pass one "
                "entry per token (e.g. labels != -100)."
            )
        values = torch.where(mask.bool(), values, values.new_zeros(()))
    return values


def reduce_token_loss(
    per_token: Tensor, mask: Tensor | None = None, *, num_valid: float | Tensor | None = None
) -> Tensor:
    """Sum of per-token values divided by the number of valid tokens (a batch of only masked tokens gives 0).

    Args:
        per_token: ``(N,)`` values with masked tokens already 0 (as the functions here return them).
        mask: ``(N,)`` valid tokens, counted when ``num_valid`` is not given; ``None``: all ``N`` are valid.
        num_valid: the normaliser to use instead, e.g. the valid tokens of the whole optimizer step
            (all micro-batches, all ranks) so that accumulated gradients equal the full-batch ones.

    Returns:
        0-d tensor.

    Example:
        >>> reduce_token_loss(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([True, False, True]))
        tensor(1.5000)
    """
    if num_valid is None:
        num_valid = per_token.numel() if mask is None else mask.sum()
    if isinstance(num_valid, Tensor):
        return per_token.sum() / num_valid.clamp_min(1)
    return per_token.sum() / max(num_valid, 1)
