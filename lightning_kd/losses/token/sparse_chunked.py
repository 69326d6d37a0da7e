"""A sparse teacher (a top-``k`` or sampled store) against a student seen through its hidden states and lm head,
``chunk_size`` tokens at a time: the student's ``(tokens, V)`` logits never exist in full, as in
:func:`~lightning_kd.losses.token.chunked_token_distill_loss` (same activation checkpointing, exact gradients).
Each chunk is one call of the full-logits loss (:func:`~lightning_kd.losses.token.topk_bucket_distill_loss`,
:func:`~lightning_kd.losses.token.topk_uniform_distill_loss` or
:func:`~lightning_kd.losses.token.sampled_distill_loss`) on that chunk's logits, so the sums are those of the
full-logits call (tested). Pure torch."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lightning_kd.losses.token.chunked import TokenDistillSums

SparseLoss = Callable[..., TokenDistillSums]


def _chunk(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, logprobs: Tensor, ids: Tensor, labels: Tensor, *,
    loss: SparseLoss, options: dict[str, Any],
) -> tuple[Tensor, Tensor]:  # fmt: skip
    sums = loss(F.linear(hidden, weight, bias), logprobs, ids, labels, ce=True, **options)
    return sums.div_sum, sums.ce_sum


def chunked_sparse_distill_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    logprobs: Tensor,
    ids: Tensor,
    labels: Tensor,
    *,
    loss: SparseLoss,
    chunk_size: int = 256,
    ignore_index: int = -100,
    **options: Any,
) -> TokenDistillSums:
    """The sums of ``loss`` (a sparse-teacher token loss taking full logits) from the student's final hidden states
    ``(..., H)`` and lm head ``weight`` ``(V, H)`` / ``bias``, ``chunk_size`` tokens at a time.

    Args:
        hidden: the student's final hidden states, already shifted like ``labels``.
        weight, bias: its lm head (receive gradient).
        logprobs, ids: ``(..., k)`` the teacher's stored tokens.
        labels: ``(...)`` next-token ids.
        loss: e.g. :func:`~lightning_kd.losses.token.sampled_distill_loss`.
        chunk_size: tokens per chunk.
        options: ``divergence``, ``temperature``, ``vocab_size`` for ``loss``.

    Example:
        >>> from lightning_kd.losses.token import topk_bucket_distill_loss
        >>> h = torch.randn(6, 4, requires_grad=True); w = torch.randn(9, 4)
        >>> lp, ids = torch.log_softmax(torch.randn(6, 9), -1).topk(3)
        >>> y = torch.tensor([1, 2, -100, 3, 4, 5])
        >>> a = chunked_sparse_distill_loss(h, w, None, lp, ids, y, loss=topk_bucket_distill_loss, chunk_size=4)
        >>> b = topk_bucket_distill_loss(h @ w.T, lp, ids, y)
        >>> torch.allclose(a.div_sum, b.div_sum) and torch.allclose(a.ce_sum, b.ce_sum)
        True
    """
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; e.g. chunk_size=256.")
    h = hidden.reshape(-1, hidden.shape[-1])
    lp, ix = logprobs.reshape(-1, logprobs.shape[-1]), ids.reshape(-1, ids.shape[-1])
    y = labels.reshape(-1)
    if not len(h) == len(lp) == len(ix) == len(y):
        raise ValueError(
            f"chunked_sparse_distill_loss: hidden {tuple(hidden.shape)}, the teacher's stored tokens "
            f"{tuple(logprobs.shape)} / {tuple(ids.shape)} and labels {tuple(labels.shape)} must have the same "
            "positions."
        )
    fn = partial(_chunk, loss=loss, options={**options, "ignore_index": ignore_index})
    recompute = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias))
    div_sum = h.new_zeros((), dtype=torch.float32)
    ce_sum = div_sum.clone()
    for start in range(0, len(h), chunk_size):
        rows = slice(start, start + chunk_size)
        args = (h[rows], weight, bias, lp[rows], ix[rows], y[rows])
        div, ce = checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False) if recompute else fn(*args)
        div_sum, ce_sum = div_sum + div, ce_sum + ce
    return TokenDistillSums(ce_sum, div_sum, (y != ignore_index).sum())
