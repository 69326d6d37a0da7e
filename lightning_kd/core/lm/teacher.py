"""A frozen causal-LM teacher: full logits, or final hidden states and its lm head for a chunked loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.core.lm.heads import check_plain_head, final_hidden, head_width, lm_head
from lightning_kd.core.lm.token_loss import ChunkedTokenLoss, FullLogitsTokenLoss, TokenLoss
from lightning_kd.core.teacher import Teacher, TeacherOutput, output_logits


class CausalLMTeacher(Teacher):
    """A frozen causal-LM teacher (a :class:`~lightning_kd.core.teacher.Teacher`): logits, or final hidden states.

    ``teacher(inputs)`` answers ``TeacherOutput(logits=(B, L, V) fp32)``; ``teacher(inputs, output="hidden")``
    answers ``TeacherOutput(hidden=(B, L, H), head=(weight, bias))`` in the model's dtype, for a loss that applies
    the head chunk by chunk so the ``(B, L, V)`` logits are never formed. The token loss that fits (chunked or full
    logits) is :meth:`token_loss`.

    Args:
        model: a ``transformers`` causal LM.
        ckpt: weights (a lightning-kd checkpoint or a ``state_dict`` file); ``None`` keeps the model's.
        save_weights: keep the teacher's weights in the student's checkpoints.
        allow_pickle: see :class:`~lightning_kd.core.teacher.Teacher`.
    """

    def __init__(
        self, model: nn.Module, ckpt: str | None = None, save_weights: bool = False, allow_pickle: bool = False
    ) -> None:
        super().__init__(model, ckpt=ckpt, save_weights=save_weights, allow_pickle=allow_pickle)

    @property
    def num_classes(self) -> int | None:
        return head_width(self.model)

    def token_loss(self, chunk_size: int | None) -> TokenLoss:
        """The hidden states and the head chunk by chunk when ``chunk_size`` is set (a head that is not
        ``hidden @ W.T + b`` is refused by name), else full logits."""
        if chunk_size is None:
            return FullLogitsTokenLoss()
        check_plain_head(self.model, "teacher")
        return ChunkedTokenLoss(chunk_size)

    def forward(
        self, inputs: Any, index: Tensor | None = None, epoch: int | None = None, output: str = "logits"
    ) -> TeacherOutput:
        if output not in ("logits", "hidden"):
            raise ValueError(f"CausalLMTeacher answers output='logits' or 'hidden', got {output!r}.")
        with torch.no_grad():
            if output == "hidden":
                return TeacherOutput(hidden=final_hidden(self.model, inputs), head=lm_head(self.model, "teacher"))
            return TeacherOutput(logits=output_logits(self.model(**inputs), "teacher").float())
