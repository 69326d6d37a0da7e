"""The token-loss strategies of an offline teacher known through ``k`` stored tokens per position (an
:class:`~lightning_kd.cache.lm_store.LMTeacherStore`): its top ``k`` (:class:`TopKTokenLoss`) or ``k`` tokens
drawn from it (:class:`SampledTokenLoss`). Training steps read the store; evaluation runs the teacher's live model
(when it has one). With ``chunk_size`` the student is seen through its hidden states and lm head, a chunk of tokens
at a time (:func:`~lightning_kd.losses.token.chunked_sparse_distill_loss`); otherwise through its full logits."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from lightning_kd.core.lm.token_loss import (
    FORWARD_KL,
    ChunkedTokenLoss,
    StudentRows,
    TokenLoss,
    _ce_only,
)
from lightning_kd.core.teacher import TeacherBase, TeacherOutput
from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.token import (
    TokenDistillSums,
    chunked_sparse_distill_loss,
    sampled_distill_loss,
    topk_bucket_distill_loss,
    topk_uniform_distill_loss,
)
from lightning_kd.losses.token.sparse_chunked import SparseLoss


class _StoreTokenLoss(ChunkedTokenLoss):
    """Shared by the two: the stored tokens in training steps (``output="topk"``), the live model in evaluation;
    the student's full logits (``chunk_size=None``) or hidden states and head (``chunk_size`` set)."""

    needs = "topk"

    def __init__(self, chunk_size: int | None = None, student_name: str = "student") -> None:
        if chunk_size is not None:
            super().__init__(chunk_size, student_name)
        else:
            self.chunk_size, self.eval_chunk_size, self.student_name = None, 1024, student_name
            self._checked = set()

    def loss(self) -> SparseLoss:
        raise NotImplementedError

    def check_student(self, student) -> None:  # noqa: ANN001 - nn.Module
        if self.chunk_size is not None:
            super().check_student(student)

    def student_rows(self, model, inputs: dict[str, Tensor]) -> StudentRows:  # noqa: ANN001 - nn.Module
        if self.chunk_size is None:
            return TokenLoss.student_rows(self, model, inputs)
        return super().student_rows(model, inputs)

    def teacher_output(self, teacher: TeacherBase, inputs: dict[str, Tensor], index: Tensor | None) -> TeacherOutput:
        if index is not None:
            return teacher(inputs, index=index, output="topk")
        live = "logits" if self.chunk_size is None else "hidden"
        model = getattr(teacher, "model", None)
        if self.chunk_size is not None and model is not None:
            self._check_once(model, inputs, "teacher")
        return teacher(inputs, index=None, output=live)

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
        options = {"divergence": divergence, "temperature": temperature, "vocab_size": vocab_size}
        if teacher.topk_logprobs is None:
            if teacher.logits is None and teacher.hidden is None:
                raise ValueError(
                    f"{type(self).__name__} needs the teacher's stored tokens in training steps, and the teacher "
                    "answered without them: the data module must give sequence indices (with_indices: true)."
                )
            # text the store does not hold (generated in the step): the live model
            live = ChunkedTokenLoss.sums if self.chunk_size is not None else TokenLoss.sums
            return live(self, student, teacher, labels, **options)
        if teacher.temperature is not None and abs(teacher.temperature - temperature) > 1e-9:
            raise ValueError(
                f"the LM teacher store does not match this run: temperature: store {teacher.temperature!r}, this run "
                f"{float(temperature)!r} (set the run's temperature to the store's, or rebuild the store at the run's "
                "temperature)."
            )
        stored = (teacher.topk_logprobs, teacher.topk_ids)
        if self.chunk_size is None:
            return self.loss()(student.rows, *stored, labels, **options)
        return chunked_sparse_distill_loss(
            student.rows, *student.head, *stored, labels, loss=self.loss(), chunk_size=self.chunk_size, **options
        )


class TopKTokenLoss(_StoreTokenLoss):
    """A teacher known through its top-``k`` log-probabilities per token.

    Args:
        tail: ``bucket`` (the divergence over the ``k`` stored tokens plus one "anything else" bucket) or
            ``uniform`` (the teacher's remaining mass spread evenly over the other tokens, a full-vocabulary
            divergence); see :mod:`lightning_kd.losses.token.sparse`. Both equal live KD at ``k = V``.
        chunk_size: ``None``: the student's full logits; an int: its hidden states and head, so many tokens at a
            time.

    Example:
        >>> TopKTokenLoss("bucket").needs, TopKTokenLoss(chunk_size=256).chunk_size
        ('topk', 256)
    """

    def __init__(
        self,
        tail: Literal["bucket", "uniform"] = "bucket",
        chunk_size: int | None = None,
        student_name: str = "student",
    ) -> None:
        if tail not in ("bucket", "uniform"):
            raise ValueError(f"tail must be 'bucket' or 'uniform', got {tail!r}.")
        self.tail = tail
        super().__init__(chunk_size, student_name)

    def loss(self) -> SparseLoss:
        return topk_bucket_distill_loss if self.tail == "bucket" else topk_uniform_distill_loss


class SampledTokenLoss(_StoreTokenLoss):
    """A teacher known through ``k`` tokens drawn from it per position: the unbiased estimate of the divergence
    (:func:`~lightning_kd.losses.token.sampled_distill_loss`).

    Args:
        chunk_size: as :class:`TopKTokenLoss`'s.
    """

    def loss(self) -> SparseLoss:
        return sampled_distill_loss
