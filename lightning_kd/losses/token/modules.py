"""Module forms of the token losses: they hold the hyper-parameters and call the functions.

``temperature`` is a non-persistent buffer that a scheduler may overwrite in place (``fill_``); ``beta`` and
``skew`` are plain attributes. The formulas and papers are in :mod:`lightning_kd.losses.token.divergences`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_kd.losses.token.chunked import TokenDistillSums, chunked_token_distill_loss
from lightning_kd.losses.token.divergences import check_token_options, reduce_token_loss, token_divergence


class _TokenLoss(nn.Module):
    """The options shared by every token loss, validated once here."""

    temperature: Tensor

    def __init__(
        self, kind: str, beta: float, skew: float, temperature: float, vocab_size: int | None, scale_by_t2: bool
    ) -> None:
        super().__init__()
        check_token_options(kind, beta, skew, temperature)
        self.kind, self.beta, self.skew = kind, beta, skew
        self.vocab_size, self.scale_by_t2 = vocab_size, scale_by_t2
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, beta={self.beta}, skew={self.skew}, temperature={self.temperature.item():g}"


class TokenDivergenceLoss(_TokenLoss):
    """Module form of :func:`token_divergence` on logits, reduced as ``reduction`` says.

    Args:
        kind, beta, skew, temperature, vocab_size, scale_by_t2: as in :func:`token_divergence`.
        reduction: ``"mean"`` over the valid tokens of this call (:func:`reduce_token_loss`), ``"sum"``, or
            ``"none"`` (per-token ``(N,)``). Use ``"sum"`` and divide by the step's token count yourself under
            gradient accumulation or DDP.

    Example:
        >>> loss = TokenDivergenceLoss("jsd", beta=0.5, temperature=1.0)
        >>> loss(torch.randn(6, 11), torch.randn(6, 11), mask=torch.tensor([1, 1, 1, 0, 0, 1])).shape
        torch.Size([])
    """

    def __init__(
        self,
        kind: str = "forward_kl",
        beta: float = 0.5,
        skew: float = 0.1,
        temperature: float = 1.0,
        vocab_size: int | None = None,
        scale_by_t2: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(kind, beta, skew, temperature, vocab_size, scale_by_t2)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        self.reduction = reduction

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
        values = token_divergence(
            student_logits,
            teacher_logits,
            self.kind,
            beta=self.beta,
            skew=self.skew,
            temperature=self.temperature,
            mask=mask,
            vocab_size=self.vocab_size,
            scale_by_t2=self.scale_by_t2,
        )
        if self.reduction == "none":
            return values
        return values.sum() if self.reduction == "sum" else reduce_token_loss(values, mask)


class ChunkedTokenDistillLoss(_TokenLoss):
    """Module form of :func:`chunked_token_distill_loss`: returns the sums ``(ce_sum, div_sum, num_valid)``.

    Args:
        kind, beta, skew, temperature, vocab_size, scale_by_t2: as in :func:`token_divergence`.
        chunk_size, ce, ignore_index: as in :func:`chunked_token_distill_loss`.

    Example:
        >>> loss = ChunkedTokenDistillLoss("skew_forward_kl", skew=0.1, chunk_size=4)
        >>> head = torch.nn.Linear(4, 7)
        >>> sums = loss(torch.randn(10, 4), head.weight, head.bias, torch.randn(10, 6), torch.randn(7, 6), None,
        ...             torch.randint(0, 7, (10,)))
        >>> sums.num_valid
        tensor(10)
    """

    def __init__(
        self,
        kind: str = "forward_kl",
        beta: float = 0.5,
        skew: float = 0.1,
        temperature: float = 1.0,
        vocab_size: int | None = None,
        scale_by_t2: bool = True,
        chunk_size: int = 256,
        ce: bool = True,
        ignore_index: int = -100,
    ) -> None:
        super().__init__(kind, beta, skew, temperature, vocab_size, scale_by_t2)
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}; e.g. chunk_size=256.")
        self.chunk_size, self.ce, self.ignore_index = chunk_size, ce, ignore_index

    def forward(
        self,
        student_hidden: Tensor,
        student_weight: Tensor,
        student_bias: Tensor | None,
        teacher_hidden: Tensor,
        teacher_weight: Tensor,
        teacher_bias: Tensor | None,
        labels: Tensor,
    ) -> TokenDistillSums:
        return chunked_token_distill_loss(
            student_hidden,
            student_weight,
            student_bias,
            teacher_hidden,
            teacher_weight,
            teacher_bias,
            labels,
            kind=self.kind,
            beta=self.beta,
            skew=self.skew,
            temperature=self.temperature,
            vocab_size=self.vocab_size,
            chunk_size=self.chunk_size,
            ce=self.ce,
            ignore_index=self.ignore_index,
            scale_by_t2=self.scale_by_t2,
        )
