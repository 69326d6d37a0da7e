"""Token distillation between two vocabularies, on aligned predictions (:mod:`lightning_kd.data.alignment`).

Rows here are pairs: row ``n`` of the student's logits ``(P, V_s)`` and row ``n`` of the teacher's ``(P, V_t)``
predict the same next piece of text. Two ways to compare distributions over different vocabularies:

- **ULD** (Universal Logit Distillation, Boizard et al. 2024, arXiv:2402.12030, eq. 3): the Wasserstein-1 distance
  between the two distributions with the tokens' identities thrown away — sort each probability vector in
  decreasing order, pad the shorter with zeros, sum the absolute differences. It needs no vocabulary map, and
  only asks the student to be as *confident* as the teacher, not confident about the same token.
- **span-aligned KL** (:func:`mapped_logprobs`): the teacher's distribution read through the map of tokens that
  stand for the same bytes in both vocabularies (:func:`~lightning_kd.data.token_bytes.shared_vocab_map`); the
  teacher's mass on tokens the student lacks and the student's mass on tokens the teacher lacks each go into one
  "other" bucket (as the offline store's tail, :mod:`lightning_kd.losses.token.sparse`), and any divergence of the
  core (:mod:`lightning_kd.losses.divergence`) is taken over the ``shared + 1`` buckets. With identical
  vocabularies the map is the identity, there is no bucket, and it is the same-tokenizer divergence.

Both in fp32; no gradient reaches the teacher. Chunked: the heads are applied ``chunk_size`` pairs at a time under
activation checkpointing (exact gradients, one ``(chunk, V)`` block per side at a time). Pure torch.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lightning_kd.losses.divergence import Divergence, as_divergence, check_temperature

CrossLoss = Literal["uld", "span_kl"]
Head = tuple[Tensor, Tensor | None]


def uld_rows(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-row ULD ``Σ_i |sort↓(p_s)_i − sort↓(p_t)_i|``, ``(P, V_s), (P, V_t) -> (P,)``, the shorter vector padded
    with zeros; ``p = softmax(z / T)``. Between 0 and 2; no ``T²`` (it is not a KL).

    Example:
        >>> s = torch.log(torch.tensor([[0.7, 0.2, 0.1]])); t = torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]]))
        >>> round(uld_rows(s, t).item(), 4)  # |0.7-0.5| + |0.2-0.3| + |0.1-0.1| + |0-0.1|
        0.4
    """
    check_temperature(temperature)
    p_s = torch.softmax(student_logits.float() / temperature, dim=-1).sort(dim=-1, descending=True).values
    p_t = torch.softmax(teacher_logits.detach().float() / temperature, dim=-1).sort(dim=-1, descending=True).values
    width = max(p_s.shape[-1], p_t.shape[-1])
    p_s = F.pad(p_s, (0, width - p_s.shape[-1]))
    p_t = F.pad(p_t, (0, width - p_t.shape[-1]))
    return (p_s - p_t).abs().sum(-1)


def _tail(log_p: Tensor, kept: Tensor) -> Tensor:
    """``log(1 − Σ exp(kept))`` per row, floored at 1e-12 before the log (no ``0 · inf`` gradient)."""
    mass = kept.logsumexp(-1, keepdim=True).clamp_max(0.0)
    return torch.log((-torch.expm1(mass)).clamp_min(1e-12))


class TokenMap(NamedTuple):
    """A teacher → student vocabulary map in the form the loss uses: the mapped ``teacher_ids`` ``(M,)``, the
    student ``columns`` ``(K,)`` that receive mass, and for each mapped teacher id the index of its column
    (``into``, ``(M,)``); ``one_to_one`` when no column receives two teacher tokens."""

    teacher_ids: Tensor
    columns: Tensor
    into: Tensor
    one_to_one: bool


def shared_ids(vocab_map: Tensor) -> TokenMap:
    """The :class:`TokenMap` of a ``(V_t,)`` map (``-1``: unmapped); computed once per run (it reads the map)."""
    teacher_ids = (vocab_map >= 0).nonzero().squeeze(1)
    columns, into = torch.unique(vocab_map[teacher_ids], return_inverse=True)
    if len(columns) == len(teacher_ids):  # one-to-one: the teacher ids put in column order once, here
        order = torch.argsort(into)
        return TokenMap(teacher_ids[order], columns, into[order], True)
    return TokenMap(teacher_ids, columns, into, False)


def mapped_logprobs(
    student_logits: Tensor, teacher_logits: Tensor, token_map: TokenMap, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities over the student columns the map reaches plus one "other" bucket.

    Args:
        student_logits: ``(P, V_s)``.
        teacher_logits: ``(P, V_t)``.
        token_map: :func:`shared_ids` of the vocabulary map; a column reached by several teacher tokens gets the
            sum of their probabilities.
        temperature: ``T``; both softened by it.

    Returns:
        ``(P, K + 1)`` fp32 each (``(P, K)`` when both vocabularies are wholly covered: no bucket).
    """
    log_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kept_s = log_s.index_select(-1, token_map.columns)
    kept_t = log_t.index_select(-1, token_map.teacher_ids)
    if not token_map.one_to_one:  # summed in probability space, never by averaging log-probabilities
        mass = kept_t.new_zeros(kept_t.shape[0], len(token_map.columns)).index_add_(1, token_map.into, kept_t.exp())
        kept_t = mass.clamp_min(1e-30).log()
    if len(token_map.columns) == log_s.shape[-1] and len(token_map.teacher_ids) == log_t.shape[-1]:
        return kept_s, kept_t
    return torch.cat([kept_s, _tail(log_s, kept_s)], -1), torch.cat([kept_t, _tail(log_t, kept_t)], -1)


def _pair_values(
    s_rows: Tensor,
    s_head: Head | None,
    t_rows: Tensor,
    t_head: Head | None,
    *,
    loss: CrossLoss,
    divergence: Divergence,
    temperature: float,
    ids: TokenMap | None,
    scale_by_t2: bool,
) -> Tensor:
    s = s_rows if s_head is None else F.linear(s_rows, *s_head)
    with torch.no_grad():
        t = t_rows if t_head is None else F.linear(t_rows, *t_head)
    if loss == "uld":
        return uld_rows(s, t, temperature).sum()
    log_s, log_t = mapped_logprobs(s, t, ids, temperature=temperature)
    values = divergence.of_log_probs(log_s, log_t)
    return (values * temperature**2 if scale_by_t2 and temperature != 1.0 else values).sum()


def cross_tokenizer_div_sum(
    student_rows: Tensor,
    teacher_rows: Tensor,
    *,
    loss: CrossLoss = "span_kl",
    student_head: Head | None = None,
    teacher_head: Head | None = None,
    vocab_map: Tensor | None = None,
    shared: TokenMap | None = None,
    divergence: Divergence | str = "forward_kl",
    temperature: float = 1.0,
    chunk_size: int | None = 256,
    scale_by_t2: bool = True,
) -> Tensor:
    """The summed cross-tokenizer divergence over ``P`` aligned pairs, 0-d fp32.

    Args:
        student_rows, teacher_rows: ``(P, ·)`` logits, or final hidden states when the ``*_head`` is given
            (``(weight, bias)``: applied per chunk, so only ``chunk_size × V`` logits exist at a time).
        loss: ``uld`` or ``span_kl``.
        vocab_map: ``(V_t,)`` student id per teacher id, ``-1`` unmapped (``span_kl`` only).
        shared: instead of ``vocab_map``, its :func:`shared_ids` computed once (no device read per call).
        divergence: the core's divergence for ``span_kl`` (forward/reverse KL, JSD, skew KLs, TV).
        temperature: ``T``; ``span_kl`` values times ``T²`` (``scale_by_t2``), ULD unscaled.
        chunk_size: pairs per chunk (``None``: all at once).
    """
    if loss not in ("uld", "span_kl"):
        raise ValueError(f"loss must be 'uld' or 'span_kl', got {loss!r}.")
    if student_rows.shape[0] != teacher_rows.shape[0]:
        raise ValueError(
            f"{student_rows.shape[0]} student rows and {teacher_rows.shape[0]} teacher rows: pass one row per aligned "
            "pair on each side."
        )
    ids = shared
    if loss == "span_kl" and ids is None:
        if vocab_map is None:
            raise ValueError("loss='span_kl' needs the vocab_map (teacher id -> student id, -1 unmapped).")
        ids = shared_ids(vocab_map.to(student_rows.device))
    fn = partial(
        _pair_values, loss=loss, divergence=as_divergence(divergence), temperature=temperature, ids=ids,
        scale_by_t2=scale_by_t2,
    )  # fmt: skip
    total = student_rows.new_zeros((), dtype=torch.float32)
    if student_rows.shape[0] == 0:
        return total + 0.0 * student_rows.sum()  # keeps the graph: a batch without pairs still backpropagates
    s_head = student_head
    t_head = None if teacher_head is None else tuple(None if x is None else x.detach() for x in teacher_head)
    recompute = torch.is_grad_enabled() and (
        student_rows.requires_grad or (s_head is not None and s_head[0].requires_grad)
    )
    step = chunk_size or student_rows.shape[0]
    for start in range(0, student_rows.shape[0], step):
        rows = slice(start, start + step)
        args = (student_rows[rows], s_head, teacher_rows[rows].detach(), t_head)
        total = total + (checkpoint(fn, *args, use_reentrant=False) if recompute and s_head is not None else fn(*args))
    return total
