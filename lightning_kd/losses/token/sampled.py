"""Token distillation from tokens drawn from the teacher: an unbiased estimate of every divergence of the core.

A sampled LM teacher store (:mod:`lightning_kd.cache.lm_store`, ``kind: sampled``) keeps, per position, ``S``
tokens ``x_1 … x_S`` drawn with replacement from ``p_t = softmax(z_t / T)`` and their ``log p_t(x_i)``. Every
divergence of the core is a sum of per-token terms, ``D(p_t, p_s) = Σ_v g(p_t(v), p_s(v))``
(:meth:`~lightning_kd.losses.divergence.Divergence.pointwise`), so::

    D̂ = (1/S) Σ_i g(p_t(x_i), p_s(x_i)) / p_t(x_i)        E[D̂] = Σ_v p_t(v) · g(v) / p_t(v) = D

for any student, and, the draws not depending on the student, its gradient in the student's logits is unbiased
too. For forward KL each draw's term is ``log p_t(x) − log p_s(x)``: the student's cross-entropy against the draws'
empirical distribution (plus the constant teacher entropy), which is "Random Sampling KD" (Anshumann et al.,
"Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs", ACL 2025) with the teacher itself as the
proposal, so every draw's importance weight is ``1 / S``. A top-``k`` store is biased by contrast: whatever it
does with the tail (:mod:`lightning_kd.losses.token.sparse`), a student that matches the kept tokens gets no
signal about the rest.

All six divergences are unbiased this way; their variances differ. Forward KL's terms are log-ratios; the others
(reverse KL, JSD, skew KLs, TV) weigh terms by ``p_s(x) / p_t(x)``, large where the student puts mass on tokens the
teacher rarely draws: with a sampled store forward KL (the paper's case) is the one to use. A single position's
estimate can be negative; it is not floored (a floor would bias it). Pure torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_kd.losses.divergence import Divergence, as_divergence, check_temperature
from lightning_kd.losses.token.chunked import TokenDistillSums
from lightning_kd.losses.token.sparse import student_ce_sum


def _check(student_logits: Tensor, sample_logprobs: Tensor, sample_ids: Tensor, labels: Tensor) -> None:
    if sample_ids.shape != sample_logprobs.shape or sample_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"sampled_distill_loss: student logits {tuple(student_logits.shape)}, the teacher's sampled "
            f"log-probs {tuple(sample_logprobs.shape)} and ids {tuple(sample_ids.shape)} must share their leading "
            "dimensions (one row of draws per position)."
        )
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"sampled_distill_loss: labels {tuple(labels.shape)} must have one entry per position "
            f"{tuple(student_logits.shape[:-1])}."
        )


def sampled_divergence(
    log_p_s: Tensor, sample_logprobs: Tensor, sample_ids: Tensor, divergence: Divergence | str = "forward_kl"
) -> Tensor:
    """Per-position estimate ``D̂`` (module docstring) from the student's softened log-probabilities ``(..., V)`` and
    ``S`` draws from the teacher ``(..., S)`` (their log-probabilities at the same temperature, and their ids).

    Example:
        >>> log_s = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
        >>> draws = torch.tensor([[0, 0, 1]]); lp = torch.log(torch.tensor([[0.6, 0.6, 0.3]]))
        >>> round(sampled_divergence(log_s, lp, draws).item(), 4)  # ((ln 1.2)·2 + ln 1.2) / 3
        0.1823
    """
    divergence = as_divergence(divergence)
    log_t = sample_logprobs.detach().float()  # no gradient into the teacher side
    terms = divergence.pointwise(log_p_s.gather(-1, sample_ids.long()), log_t)  # g(p_t(x), p_s(x))
    return (terms * torch.exp(-log_t)).mean(-1)


def sampled_distill_loss(
    student_logits: Tensor,
    sample_logprobs: Tensor,
    sample_ids: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence | str = "forward_kl",
    temperature: float = 1.0,
    vocab_size: int | None = None,
    ce: bool = True,
    ignore_index: int = -100,
) -> TokenDistillSums:
    """The sums of :func:`~lightning_kd.losses.token.naive_token_distill_loss` against a teacher known through ``S``
    draws per position: the unbiased estimate :func:`sampled_divergence` (``T²`` applied) summed over the valid
    positions, and the student's next-token cross-entropy over its full head.

    Args:
        student_logits: ``(..., V)``, already shifted (row ``i`` predicts ``labels[i]``).
        sample_logprobs, sample_ids: ``(..., S)`` the draws' ``log softmax(z_t / T)`` and token ids.
        labels: ``(...)`` next-token ids; ``ignore_index`` rows add nothing.
        divergence: a :class:`~lightning_kd.losses.divergence.Divergence` or a kind's name.
        temperature: the store's ``T`` (the draws were made at it).
        vocab_size: the columns the ids index (a padded student head is cut to them); ``None``: all.
        ce: also return the cross-entropy sum.
        ignore_index: label of rows without a target.
    """
    check_temperature(temperature)
    _check(student_logits, sample_logprobs, sample_ids, labels)
    scored = student_logits if vocab_size is None else student_logits[..., :vocab_size]
    log_full = torch.log_softmax(scored.float() / temperature, dim=-1)
    valid = labels != ignore_index
    estimate = sampled_divergence(log_full, sample_logprobs, sample_ids, divergence)
    div_sum = torch.where(valid, estimate, estimate.new_zeros(())).sum()
    if temperature != 1.0:
        div_sum = div_sum * temperature**2
    ce_sum = student_ce_sum(student_logits, log_full, labels, temperature, ignore_index) if ce else None
    return TokenDistillSums(ce_sum, div_sum, valid.sum())
