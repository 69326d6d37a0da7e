"""Token-level (language-model) divergences: the divergence core (:mod:`lightning_kd.losses.divergence`) on
``(tokens, V)`` rows with a mask of valid tokens, and the reduction by a count of valid tokens.

Every function returns one value PER TOKEN, masked tokens 0. A caller sums them and divides by its own count of
valid tokens: with gradient accumulation or DDP that count is the one over the whole optimizer step, not over one
micro-batch (:func:`reduce_token_loss` does the one-batch case). The formulas and papers are in the core.
"""

from __future__ import annotations

from torch import Tensor

from lightning_kd.losses.divergence import Divergence, divergence_kinds, divergence_rows

TOKEN_DIVERGENCES = divergence_kinds()


def token_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: Divergence | str = "forward_kl",
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Per-token ``divergence`` between student and teacher next-token distributions, ``(*, V) -> (*,)``.

    Args:
        student_logits: ``(N, V_s)`` (or ``(*, V_s)``); any dtype, computed in fp32.
        teacher_logits: ``(N, V_t)``; no gradient flows into it.
        divergence: a :class:`~lightning_kd.losses.divergence.Divergence` (kind, beta, skew) or a kind's name.
        temperature: ``T > 0``; both logits are divided by ``T`` before the softmax.
        mask: ``(N,)`` bool or 0/1, True for valid tokens; other tokens give 0. ``None``: all are valid.
        vocab_size: compare only the first ``vocab_size`` columns of both logits (heads padded past the
            tokenizer's size); required when ``V_s != V_t``.
        scale_by_t2: multiply the result by ``T²`` (default), as in Hinton's KD.

    Returns:
        ``(N,)`` fp32 per-token values, 0 where ``mask`` is False.

    Example:
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 2.0]]); t = torch.tensor([[0.0, 2.0], [1.0, 2.0]])
        >>> token_divergence(s, t, Divergence("jsd", beta=0.5), mask=torch.tensor([True, False]))
        tensor([0.0895, 0.0000])
    """
    return divergence_rows(
        student_logits,
        teacher_logits,
        divergence,
        temperature,
        mask=mask,
        vocab_size=vocab_size,
        scale_by_t2=scale_by_t2,
    )


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
