"""Token distillation from a teacher's top-``k`` only: both distributions seen through the same ``k + 1`` buckets.

An offline teacher store keeps, per token, the ``k`` most likely next tokens and their log-probabilities
(:mod:`lightning_kd.cache.lm_store`); the teacher's mass outside them, ``r_T = 1 − Σ_topk p_T``, is known only in
total. Two ways to compare the student with that:

- ``uniform``: rebuild a full distribution by spreading ``r_T`` evenly over the ``V − k`` other tokens
  (:func:`decode_lm_topk`, :func:`topk_uniform_distill_loss`) and take the divergence over all ``V`` tokens. It asserts
  something the teacher never said — that its tail is flat — and pulls the student's tail towards it: on the CPU
  protocol at ``k = 32`` of 4096 it lost most of live KD's gain (``docs/results.md``).
- ``bucket`` (this module): the divergence between the two *coarse-grained* distributions over the ``k`` stored
  tokens plus one bucket "anything else", the student's bucket holding ``r_S = 1 − Σ_topk p_S`` (a log-sum-exp
  from the kept mass, differentiable). Everything in it is what the teacher said; how the student
  shares its tail mass is left free. Every divergence of the core (:mod:`lightning_kd.losses.divergence`)
  applies unchanged to the ``k + 1`` buckets (a coarse-graining, so by the data-processing inequality the value is
  at most the full divergence). With ``k = V`` there is no tail and it is the full divergence.

The third common choice, renormalising over the top ``k`` (dropping the tail), asserts the opposite of
``uniform``: that the tail is empty. Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.token.chunked import TokenDistillSums, naive_token_distill_loss


def _check_shapes(student_logits: Tensor, topk_logprobs: Tensor, topk_ids: Tensor) -> None:
    if topk_ids.shape != topk_logprobs.shape or topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"topk_bucket_logprobs: student logits {tuple(student_logits.shape)}, teacher top-k log-probs "
            f"{tuple(topk_logprobs.shape)} and ids {tuple(topk_ids.shape)} must share their leading dimensions."
        )
    if topk_ids.shape[-1] > student_logits.shape[-1]:
        raise ValueError(
            f"the teacher keeps k={topk_ids.shape[-1]} tokens but the student's logits have only "
            f"{student_logits.shape[-1]} columns."
        )


def topk_bucket_logprobs(
    student_logits: Tensor, topk_logprobs: Tensor, topk_ids: Tensor, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities over the teacher's top-``k`` tokens plus one tail bucket.

    Args:
        student_logits: ``(..., V)`` raw logits over the vocabulary the store was built for.
        topk_logprobs: ``(..., k)`` the teacher's ``log_softmax(z / T)`` at its top ``k`` tokens (any float dtype).
        topk_ids: ``(..., k)`` their token ids.
        temperature: the ``T`` both distributions are softened by (the store's).

    Returns:
        ``(student, teacher)``, each ``(..., k + 1)`` fp32 log-probabilities (the last column the tail; no tail
        column when ``k = V``). Gradients flow into ``student`` only.

    Example:
        >>> s = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
        >>> t_lp, t_ids = torch.log(torch.tensor([[0.6, 0.3]])), torch.tensor([[1, 0]])
        >>> ls, lt = topk_bucket_logprobs(s, t_lp, t_ids)
        >>> ls.exp().tolist(), [round(x, 4) for x in lt.exp()[0].tolist()]
        ([[0.25, 0.5, 0.25]], [0.6, 0.3, 0.1])
    """
    _check_shapes(student_logits, topk_logprobs, topk_ids)
    return _buckets(torch.log_softmax(student_logits.float() / temperature, dim=-1), topk_logprobs, topk_ids)


def _buckets(log_s: Tensor, topk_logprobs: Tensor, topk_ids: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`topk_bucket_logprobs` from the student's full log-probabilities ``log_s`` (already softened)."""
    kept_s = log_s.gather(-1, topk_ids.long())
    t = topk_logprobs.float()
    if topk_ids.shape[-1] == log_s.shape[-1]:
        return kept_s, t
    # r_S = 1 − Σ_topk p_S from the kept mass (expm1: accurate while r_S is small), no second (…, V) tensor
    kept_mass = kept_s.logsumexp(-1, keepdim=True).clamp_max(0.0)
    tail_s = torch.log((-torch.expm1(kept_mass)).clamp_min(1e-12))  # floored before the log: no 0 · inf gradient
    tail_t = torch.log((1.0 - t.exp().sum(-1, keepdim=True)).clamp_min(1e-12))
    return torch.cat([kept_s, tail_s], -1), torch.cat([t, tail_t], -1)


def topk_bucket_distill_loss(
    student_logits: Tensor,
    topk_logprobs: Tensor,
    topk_ids: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence | str = "forward_kl",
    temperature: float = 1.0,
    vocab_size: int | None = None,
    ce: bool = True,
    ignore_index: int = -100,
) -> TokenDistillSums:
    """The sums of :func:`~lightning_kd.losses.token.naive_token_distill_loss` against a top-``k`` teacher: the
    ``divergence`` between the ``k + 1``-bucket distributions (:func:`topk_bucket_logprobs`, ``T²``
    applied), and the student's next-token cross-entropy over its full head.

    Args:
        student_logits: ``(..., V)``, already shifted (row ``i`` predicts ``labels[i]``).
        topk_logprobs, topk_ids: ``(..., k)``, the teacher's top ``k`` at temperature ``temperature``.
        labels: ``(...)`` next-token ids; ``ignore_index`` rows add nothing.
        divergence: a :class:`~lightning_kd.losses.divergence.Divergence` or a kind's name.
        temperature: the store's ``T``.
        vocab_size: the columns the store's ids index (a padded student head is cut to them); ``None``: all.
        ce: also return the cross-entropy sum.
        ignore_index: label of rows without a target.
    """
    scored = student_logits if vocab_size is None else student_logits[..., :vocab_size]
    _check_shapes(scored, topk_logprobs, topk_ids)
    log_full = torch.log_softmax(scored.float() / temperature, dim=-1)  # once: buckets, and the CE when T = 1
    log_s, log_t = _buckets(log_full, topk_logprobs, topk_ids)
    # log-probabilities times T are logits whose softening by T gives back exactly these distributions
    sums = naive_token_distill_loss(
        log_s * temperature, log_t * temperature, labels, divergence=divergence, temperature=temperature,
        ce=False, ignore_index=ignore_index,
    )  # fmt: skip
    if not ce:
        return sums
    return TokenDistillSums(student_ce_sum(student_logits, log_full, labels, temperature, ignore_index),
                            sums.div_sum, sums.num_valid)  # fmt: skip


def student_ce_sum(
    student_logits: Tensor, log_scored: Tensor, labels: Tensor, temperature: float, ignore_index: int
) -> Tensor:
    """The student's next-token cross-entropy sum over its full head; ``log_scored`` (its softened log-probabilities
    over the compared columns) is reused when it is the same thing (``T = 1``, no padded columns)."""
    y = labels.reshape(-1)
    if temperature == 1.0 and log_scored.shape[-1] == student_logits.shape[-1]:
        return F.nll_loss(log_scored.reshape(-1, log_scored.shape[-1]), y, ignore_index=ignore_index, reduction="sum")
    rows = student_logits.reshape(-1, student_logits.shape[-1]).float()
    return F.cross_entropy(rows, y, ignore_index=ignore_index, reduction="sum")


def decode_lm_topk(logprobs: Tensor, ids: Tensor, vocab_size: int) -> Tensor:
    """Log-probabilities ``(..., V)`` rebuilt from the top ``k``: exact at ``ids``, the remaining mass
    ``r = 1 − Σ exp(logprobs)`` spread uniformly over the other ``V − k`` tokens (``k = V``: exact everywhere).

    ``softmax`` of the result is the rebuilt distribution (the values are log-probabilities up to fp16 rounding,
    so they need not sum to exactly 1: use them as logits).

    Example:
        >>> lp = torch.log(torch.tensor([[0.5, 0.3]])); ids = torch.tensor([[2, 0]])
        >>> [round(x, 4) for x in decode_lm_topk(lp, ids, 4).exp()[0].tolist()]
        [0.3, 0.1, 0.5, 0.1]
    """
    logprobs = logprobs.float()
    k = ids.shape[-1]
    if k > vocab_size:
        raise ValueError(f"the store keeps k={k} tokens but the vocabulary has {vocab_size}.")
    if k == vocab_size:
        out = torch.empty(*ids.shape[:-1], vocab_size, dtype=torch.float32, device=logprobs.device)
        return out.scatter_(-1, ids.long(), logprobs)
    kept = logprobs.exp().sum(-1, keepdim=True)
    # the tail's total mass; floored so a top-k holding (numerically) all the mass gives a finite, tiny tail
    rest = (1.0 - kept).clamp_min(1e-12)
    fill = torch.log(rest / (vocab_size - k))
    out = fill.expand(*ids.shape[:-1], vocab_size).contiguous()
    return out.scatter_(-1, ids.long(), logprobs)


def topk_uniform_distill_loss(
    student_logits: Tensor,
    topk_logprobs: Tensor,
    topk_ids: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence | str = "forward_kl",
    temperature: float = 1.0,
    vocab_size: int | None = None,
    ce: bool = True,
    ignore_index: int = -100,
) -> TokenDistillSums:
    """The sums of :func:`topk_bucket_distill_loss` with the ``uniform`` tail: the teacher's full distribution
    rebuilt by :func:`decode_lm_topk` over the ``vocab_size`` compared columns (all of the student's when
    ``None``), then the divergence over the whole vocabulary (``T²`` applied) and the student's CE.

    Args: as :func:`topk_bucket_distill_loss`.
    """
    width = vocab_size if vocab_size is not None else student_logits.shape[-1]
    _check_shapes(student_logits[..., :width], topk_logprobs, topk_ids)
    # the rebuilt log-probabilities times T are logits whose softening by T gives back the stored distribution
    teacher_logits = temperature * decode_lm_topk(topk_logprobs, topk_ids, width)
    return naive_token_distill_loss(
        student_logits, teacher_logits, labels, divergence=divergence, temperature=temperature,
        vocab_size=vocab_size, ce=ce, ignore_index=ignore_index,
    )  # fmt: skip
