"""Token-level (language-model) divergences: the divergence core (:mod:`lightning_kd.losses.divergence`) on
``(tokens, V)`` rows with a mask of valid tokens, and the reduction by a count of valid tokens.

Every function returns one value PER TOKEN, masked tokens 0. A caller sums them and divides by its own count of
valid tokens: with gradient accumulation or DDP that count is the one over the whole optimizer step, not over one
micro-batch (:func:`reduce_token_loss` does the one-batch case). The formulas and papers are in the core.
"""

from __future__ import annotations

from torch import Tensor

from lightning_kd.losses.divergence import divergence_kinds, divergence_rows

TOKEN_DIVERGENCES = divergence_kinds()


token_divergence = divergence_rows
"""Per-token divergence between student and teacher next-token distributions, ``(*, V) -> (*,)``: the core's
:func:`~lightning_kd.losses.divergence.divergence_rows` (a ``Divergence`` or a kind's name, ``temperature``,
``mask`` of valid tokens, ``vocab_size`` for heads padded past the tokenizer, ``scale_by_t2``), under the name the
token losses use."""


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
