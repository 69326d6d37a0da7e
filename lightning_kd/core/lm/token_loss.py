"""How a causal-LM token loss is computed from the two models: one strategy object per way, chosen once.

The distillation step is the same whatever the teacher is::

    student = loss.student_rows(model, inputs)            # logits, or hidden states + head
    teacher = loss.teacher_output(teacher, inputs, index)  # what this strategy needs from the teacher
    sums = loss.sums(student, teacher, labels, divergence=..., temperature=T, vocab_size=...)

- :class:`FullLogitsTokenLoss`: both models' full ``(tokens, V)`` logits (small vocabularies, FSDP, a head the
  chunked path cannot reproduce);
- :class:`ChunkedTokenLoss`: final hidden states and lm heads, applied ``chunk_size`` tokens at a time so the
  logits never exist in full (:func:`~lightning_kd.losses.token.chunked_token_distill_loss`);
- :class:`~lightning_kd.core.lm.store_loss.TopKTokenLoss` / :class:`~lightning_kd.core.lm.store_loss.SampledTokenLoss`:
  a teacher known through ``k`` stored tokens per position (an offline store): its top ``k`` compared over
  ``k + 1`` buckets or with its tail spread uniformly, or ``k`` draws from it (an unbiased estimate).

The teacher component picks the strategy that fits what it provides (``teacher.token_loss(chunk_size)``), so the
module never asks what kind of teacher it has. A new way (sampled teacher tokens, cross-tokenizer spans) is one
subclass here and the teacher that returns it. The sums are sums over the valid tokens (``labels != -100``), for
the module to normalise over its whole optimizer step. Pure torch.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_kd.core.lm.heads import check_head_matches, check_plain_head, final_hidden, lm_head
from lightning_kd.core.teacher import TeacherBase, TeacherOutput, output_logits
from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.token import (
    TokenDistillSums,
    chunked_cross_entropy,
    chunked_token_distill_loss,
    naive_token_distill_loss,
    token_eval_sums,
)

IGNORE_INDEX = -100
FORWARD_KL = Divergence()
Head = tuple[Tensor, Tensor | None]


class StudentRows(NamedTuple):
    """What a strategy takes from the student: logits ``(B, L, V)``, or hidden states ``(B, L, H)`` and the head."""

    rows: Tensor
    head: Head | None = None


class TokenLoss:
    """Base of the strategies: full logits from both models, asked of the teacher as ``output="logits"``.

    Subclasses override what they compute differently. Every method takes the divergence, the temperature and
    the number of compared vocabulary columns from the caller, on every call: the module owns them.
    """

    #: what :meth:`teacher_output` asks the teacher for
    needs: ClassVar[str] = "logits"

    def check_student(self, student: nn.Module) -> None:
        """Construction-time checks of the student (e.g. a head the strategy can reproduce)."""

    def student_rows(self, model: nn.Module, inputs: dict[str, Tensor]) -> StudentRows:
        """The student's output this strategy works on."""
        return StudentRows(output_logits(model(**inputs), "student"))

    def teacher_output(self, teacher: TeacherBase, inputs: dict[str, Tensor], index: Tensor | None) -> TeacherOutput:
        """The teacher's answer for a batch (``index``: the sequences' indices, in training steps only)."""
        return teacher(inputs, index=index, output=self.needs)

    def sums(
        self,
        student: StudentRows,
        teacher: TeacherOutput | None,
        labels: Tensor,
        *,
        divergence: Divergence = FORWARD_KL,
        temperature: float = 1.0,
        vocab_size: int | None = None,
    ) -> TokenDistillSums:
        """``(ce_sum, div_sum, num_valid)`` of a training step; ``teacher=None``: CE only (``div_sum`` 0)."""
        if teacher is None:
            return _ce_only(student, labels, None)
        logits = _logits(teacher, type(self).__name__)
        return naive_token_distill_loss(
            student.rows, logits, labels, divergence=divergence, temperature=temperature, vocab_size=vocab_size
        )

    def eval_sums(
        self,
        student: StudentRows,
        teacher: TeacherOutput | None,
        labels: Tensor,
        *,
        divergence: Divergence = FORWARD_KL,
        temperature: float = 1.0,
        vocab_size: int | None = None,
    ) -> dict[str, Tensor]:
        """Evaluation sums (:func:`~lightning_kd.losses.token.token_eval_sums`); teacher metrics when the teacher
        answered with logits (or hidden states and a head)."""
        t_rows = None if teacher is None else (teacher.hidden if teacher.head is not None else teacher.logits)
        return token_eval_sums(
            student.rows,
            labels,
            t_rows,
            student_head=student.head,
            teacher_head=None if teacher is None else teacher.head,
            vocab_size=vocab_size,
            divergence=divergence,
            temperature=temperature,
            chunk_size=self.eval_chunk_size,
        )

    #: rows per chunk in evaluation (``None``: all at once)
    eval_chunk_size: int | None = 1024


class FullLogitsTokenLoss(TokenLoss):
    """Both models' full logits (:func:`~lightning_kd.losses.token.naive_token_distill_loss`).

    Example:
        >>> FullLogitsTokenLoss().needs
        'logits'
    """

    eval_chunk_size = None


class ChunkedTokenLoss(TokenLoss):
    """Final hidden states and lm heads, ``chunk_size`` tokens at a time: peak memory grows with
    ``chunk_size × V``, not ``tokens × V`` (:func:`~lightning_kd.losses.token.chunked_token_distill_loss`).

    On the first batch each model's ``hidden @ W.T + b`` is checked against its own logits
    (:func:`~lightning_kd.core.lm.check_head_matches`); a head that does more (soft-capping, scaling) is refused by
    name, with ``chunk_size: null`` as the fix.

    Args:
        chunk_size: tokens per chunk.
        student_name: what messages call the trained model (``model`` when it is trained alone).
    """

    needs = "hidden"

    def __init__(self, chunk_size: int = 256, student_name: str = "student") -> None:
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None (full logits), got {chunk_size!r}; e.g. 256.")
        self.chunk_size = chunk_size
        self.eval_chunk_size = chunk_size
        self.student_name = student_name
        self._checked: set[str] = set()

    def check_student(self, student: nn.Module) -> None:
        check_plain_head(student, self.student_name)

    def _check_once(self, model: nn.Module, inputs: dict[str, Tensor], who: str) -> None:
        if who not in self._checked:
            check_head_matches(model, inputs, who)
            self._checked.add(who)

    def student_rows(self, model: nn.Module, inputs: dict[str, Tensor]) -> StudentRows:
        self._check_once(model, inputs, self.student_name)
        return StudentRows(final_hidden(model, inputs), lm_head(model, self.student_name))

    def teacher_output(self, teacher: TeacherBase, inputs: dict[str, Tensor], index: Tensor | None) -> TeacherOutput:
        model = getattr(teacher, "model", None)
        if model is not None:
            self._check_once(model, inputs, "teacher")
        return super().teacher_output(teacher, inputs, index)

    def sums(
        self,
        student: StudentRows,
        teacher: TeacherOutput | None,
        labels: Tensor,
        *,
        divergence: Divergence = FORWARD_KL,
        temperature: float = 1.0,
        vocab_size: int | None = None,
    ) -> TokenDistillSums:
        if teacher is None:
            return _ce_only(student, labels, self.chunk_size)
        if teacher.hidden is None or teacher.head is None:
            raise ValueError(
                "ChunkedTokenLoss needs the teacher's final hidden states and lm head (output='hidden'); the teacher "
                "answered without them: set chunk_size: null to train on full logits."
            )
        return chunked_token_distill_loss(
            student.rows,
            *student.head,
            teacher.hidden,
            *teacher.head,
            labels,
            divergence=divergence,
            temperature=temperature,
            vocab_size=vocab_size,
            chunk_size=self.chunk_size,
        )


def _logits(teacher: TeacherOutput, who: str) -> Tensor:
    if teacher.logits is None:
        raise ValueError(f"{who} needs the teacher's logits, and the teacher answered without them.")
    return teacher.logits


def _ce_only(student: StudentRows, labels: Tensor, chunk_size: int | None) -> TokenDistillSums:
    """The student's next-token cross-entropy sum alone (no teacher): the student-alone baseline's loss."""
    if student.head is not None:
        ce, n = chunked_cross_entropy(student.rows, *student.head, labels, chunk_size=chunk_size or 256)
    else:
        rows = student.rows.reshape(-1, student.rows.shape[-1]).float()
        y = labels.reshape(-1)
        ce, n = F.cross_entropy(rows, y, ignore_index=IGNORE_INDEX, reduction="sum"), (y != IGNORE_INDEX).sum()
    return TokenDistillSums(ce, ce.new_zeros(()), n)


def token_loss_for_model(model: nn.Module, chunk_size: int | None) -> TokenLoss:
    """The strategy of a model trained alone (:class:`~lightning_kd.modules.causal_lm.CausalLMModule`)."""
    if chunk_size is None:
        return FullLogitsTokenLoss()
    loss = ChunkedTokenLoss(chunk_size, student_name="model")
    loss.check_student(model)
    return loss
