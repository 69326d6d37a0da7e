"""Token distillation from hidden states, chunk by chunk: memory that does not grow with the vocabulary.

For a language model the logits dominate memory: 4096 tokens × 128256 entries × 4 bytes is 2.1 GB per model
in fp32, and a naive loss holds several such tensors (both models' logits, their log-softmaxes, the gradient).
As in Liger-Kernel (``chunked_loss/fused_linear_distillation.py``) and torchtune
(``ForwardKLWithChunkedOutputLoss``), :func:`chunked_token_distill_loss` applies both lm heads to
``chunk_size`` tokens at a time and reduces each chunk to two scalars at once, so only one chunk's
``(chunk_size, V)`` logits ever exist. :func:`naive_token_distill_loss` computes the same sums from full
logits; it is the reference and the fallback.

Exact gradients come from activation checkpointing: each chunk runs under
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, which keeps none of the chunk's
intermediates and recomputes them in backward. We prefer it to a Liger-style autograd.Function that computes
gradients during forward because (1) the two outputs (CE sum, divergence sum) get their weights from the
caller after the call, where gradient-in-forward would need the weights up front or one set of gradient
buffers per output (each as large as the lm head); (2) ordinary autograd carries the gradient to whatever
produced the head's weight: tied embeddings, a weight computed from adapters, a shared bias; (3) with no
backward (evaluation, ``no_grad``) nothing is spent on gradients. The price is recomputing the heads'
forward in backward: about 1.5× the heads' matmul FLOPs of gradient-in-forward.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lightning_kd.losses.divergence import Divergence, as_divergence, check_temperature, shared_width
from lightning_kd.losses.token.divergences import token_divergence


class TokenDistillSums(NamedTuple):
    """Sums over the valid tokens (label != ``ignore_index``) and their count, for the caller to normalise,
    e.g. by the valid tokens of the whole optimizer step: ``(w_ce·ce_sum + w_kd·div_sum) / num_valid``."""

    ce_sum: Tensor | None  # 0-d fp32 next-token cross-entropy sum (None when ce=False)
    div_sum: Tensor  # 0-d fp32 divergence sum
    num_valid: Tensor  # 0-d int64 count of valid tokens


def _sums_from_logits(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence,
    temperature: float | Tensor,
    vocab_size: int | None,
    ce: bool,
    ignore_index: int,
    scale_by_t2: bool,
) -> tuple[Tensor, ...]:
    """``(div_sum,)`` or ``(div_sum, ce_sum)`` of ``(n, V)`` logits; CE uses the student's full head."""
    valid = labels != ignore_index
    div = token_divergence(
        student_logits,
        teacher_logits,
        divergence,
        temperature=temperature,
        mask=valid,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    ).sum()
    if not ce:
        return (div,)
    return div, F.cross_entropy(student_logits.float(), labels, ignore_index=ignore_index, reduction="sum")


def _chunk_sums(
    student_hidden: Tensor,
    student_weight: Tensor,
    student_bias: Tensor | None,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    teacher_bias: Tensor | None,
    labels: Tensor,
    **options,
) -> tuple[Tensor, ...]:
    student_logits = F.linear(student_hidden, student_weight, student_bias)  # (c, V)
    with torch.no_grad():
        teacher_logits = F.linear(teacher_hidden, teacher_weight, teacher_bias)  # (c, V')
    return _sums_from_logits(student_logits, teacher_logits, labels, **options)


def _check_head(what: str, hidden: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{what}_hidden {tuple(hidden.shape)} does not fit {what}_weight {tuple(weight.shape)}; the lm head's "
            "weight is (vocab, hidden) as in nn.Linear(hidden, vocab).weight."
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"{what}_bias {tuple(bias.shape)} must be ({weight.shape[0]},), one entry per vocab row.")


def _check_labels(labels: Tensor, tokens: torch.Size, what: str) -> None:
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != tokens:
        raise ValueError(
            f"{what}: labels must be integer token ids of shape {tuple(tokens)} (one per row, already shifted), "
            f"got {labels.dtype} {tuple(labels.shape)}."
        )


def chunked_token_distill_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    student_bias: Tensor | None,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    teacher_bias: Tensor | None,
    labels: Tensor,
    *,
    divergence: Divergence | str = "forward_kl",
    temperature: float | Tensor = 1.0,
    vocab_size: int | None = None,
    chunk_size: int = 256,
    ce: bool = True,
    ignore_index: int = -100,
    scale_by_t2: bool = True,
) -> TokenDistillSums:
    """Next-token CE and per-token divergence summed over valid tokens, one chunk of tokens at a time.

    Rows are ALREADY shifted by the caller: row ``i``'s hidden state predicts ``labels[i]`` (for a causal LM,
    ``hidden[:, :-1]`` with ``input_ids[:, 1:]``). The teacher's head runs under ``no_grad``; the divergence
    is :func:`token_divergence` on the first ``vocab_size`` columns, the CE uses the student's full head.

    Args:
        student_hidden: ``(N, H_s)`` (or ``(*, H_s)``) final hidden states of the student.
        student_weight: ``(V, H_s)`` lm-head weight (may be the tied input embedding); receives gradient.
        student_bias: ``(V,)`` or ``None``.
        teacher_hidden: ``(N, H_t)``; no gradient flows into any teacher tensor.
        teacher_weight: ``(V', H_t)``.
        teacher_bias: ``(V',)`` or ``None``.
        labels: ``(N,)`` next-token ids; ``ignore_index`` rows add nothing to either sum.
        divergence, temperature, vocab_size, scale_by_t2: as in :func:`token_divergence`.
        chunk_size: tokens per chunk; peak memory grows with ``chunk_size × V``, not ``N × V``.
        ce: also compute the cross-entropy sum (else ``ce_sum`` is ``None``).
        ignore_index: label of the rows to skip (padding, prompt tokens).

    Returns:
        :class:`TokenDistillSums` ``(ce_sum, div_sum, num_valid)``: sums, not means.

    Example:
        >>> h_s = torch.randn(10, 4, requires_grad=True); w_s = torch.randn(7, 4, requires_grad=True)
        >>> labels = torch.tensor([1, 2, 3, -100, 5, 6, 0, 1, -100, 2])
        >>> sums = chunked_token_distill_loss(h_s, w_s, None, torch.randn(10, 6), torch.randn(7, 6), None, labels,
        ...                                   divergence="jsd", chunk_size=4)
        >>> loss = (sums.ce_sum + sums.div_sum) / sums.num_valid
        >>> loss.backward(); sums.num_valid, w_s.grad.shape
        (tensor(8), torch.Size([7, 4]))
    """
    divergence = as_divergence(divergence)
    check_temperature(temperature)
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; e.g. chunk_size=256.")
    _check_head("student", student_hidden, student_weight, student_bias)
    _check_head("teacher", teacher_hidden, teacher_weight, teacher_bias)
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"student_hidden {tuple(student_hidden.shape)} and teacher_hidden {tuple(teacher_hidden.shape)} must "
            "have the same tokens (all dims but the last)."
        )
    _check_labels(labels, student_hidden.shape[:-1], "chunked_token_distill_loss")
    shared_width(student_weight.shape[0], teacher_weight.shape[0], vocab_size)  # raises on a silent mismatch
    h_s = student_hidden.reshape(-1, student_hidden.shape[-1])  # (N, H_s)
    h_t = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])  # (N, H_t)
    w_t = teacher_weight.detach()
    b_t = None if teacher_bias is None else teacher_bias.detach()
    y = labels.reshape(-1)
    fn = partial(
        _chunk_sums,
        divergence=divergence,
        temperature=temperature,
        vocab_size=vocab_size,
        ce=ce,
        ignore_index=ignore_index,
        scale_by_t2=scale_by_t2,
    )
    student = (h_s, student_weight, student_bias)
    recompute = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in student)
    sums = [h_s.new_zeros((), dtype=torch.float32) for _ in range(2 if ce else 1)]
    for start in range(0, h_s.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        args = (h_s[rows], student_weight, student_bias, h_t[rows], w_t, b_t, y[rows])
        # Checkpointing drops the chunk's (chunk, V) intermediates and recomputes them in backward.
        out = checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False) if recompute else fn(*args)
        sums = [acc + part for acc, part in zip(sums, out)]
    return TokenDistillSums(sums[1] if ce else None, sums[0], (y != ignore_index).sum())


def naive_token_distill_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence | str = "forward_kl",
    temperature: float | Tensor = 1.0,
    vocab_size: int | None = None,
    ce: bool = True,
    ignore_index: int = -100,
    scale_by_t2: bool = True,
) -> TokenDistillSums:
    """The sums of :func:`chunked_token_distill_loss` from full logits: the reference and the fallback.

    Holds both models' ``(N, V)`` logits (and their fp32 log-softmaxes) at once; use it when the logits exist
    anyway (a cached teacher, a model that returns logits) or when ``N × V`` is small.

    Args:
        student_logits: ``(N, V)`` (or ``(*, V)``), already shifted: row ``i`` predicts ``labels[i]``.
        teacher_logits: ``(N, V')``; no gradient flows into it.
        labels: ``(N,)`` next-token ids; ``ignore_index`` rows add nothing to either sum.
        divergence, temperature, vocab_size, ce, ignore_index, scale_by_t2: as in
            :func:`chunked_token_distill_loss`.

    Returns:
        :class:`TokenDistillSums` ``(ce_sum, div_sum, num_valid)``.

    Example:
        >>> s, t = torch.zeros(3, 5), torch.zeros(3, 5)
        >>> naive_token_distill_loss(s, t, torch.tensor([0, -100, 4])).div_sum
        tensor(0.)
    """
    check_temperature(temperature)
    _check_labels(labels, student_logits.shape[:-1], "naive_token_distill_loss")
    s = student_logits.reshape(-1, student_logits.shape[-1])
    t = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    y = labels.reshape(-1)
    out = _sums_from_logits(
        s,
        t,
        y,
        divergence=as_divergence(divergence),
        temperature=temperature,
        vocab_size=vocab_size,
        ce=ce,
        ignore_index=ignore_index,
        scale_by_t2=scale_by_t2,
    )
    return TokenDistillSums(out[1] if ce else None, out[0], (y != ignore_index).sum())


def _chunk_ce(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, ignore_index: int) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")


def chunked_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    *,
    chunk_size: int = 256,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """``(ce_sum, num_valid)`` of next-token cross-entropy from final hidden states, one chunk of rows at a time.

    The student-alone counterpart of :func:`chunked_token_distill_loss`: rows already shifted, the head applied
    per chunk under activation checkpointing (exact gradients, only one ``(chunk_size, V)`` block at a time).

    Example:
        >>> h = torch.randn(6, 4, requires_grad=True); w = torch.randn(9, 4)
        >>> ce, n = chunked_cross_entropy(h, w, None, torch.tensor([1, 2, -100, 3, 4, 5]), chunk_size=4)
        >>> torch.allclose(ce, F.cross_entropy(h @ w.T, torch.tensor([1, 2, -100, 3, 4, 5]), reduction="sum"))
        True
    """
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; e.g. chunk_size=256.")
    _check_head("student", hidden, weight, bias)
    _check_labels(labels, hidden.shape[:-1], "chunked_cross_entropy")
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    recompute = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias))
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk_size):
        args = (h[start : start + chunk_size], weight, bias, y[start : start + chunk_size], ignore_index)
        part = (
            checkpoint(_chunk_ce, *args, use_reentrant=False, preserve_rng_state=False)
            if recompute
            else _chunk_ce(*args)
        )
        total = total + part
    return total, (y != ignore_index).sum()
