"""Distil a causal LM into a student with *another* tokenizer (Llama → Qwen, Qwen → a custom student)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.lm import StudentRows
from lightning_kd.core.teacher import TeacherOutput
from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.token import chunked_cross_entropy
from lightning_kd.losses.token.cross import CrossLoss, TokenMap, cross_tokenizer_div_sum, shared_ids
from lightning_kd.modules.causal_lm import CausalLMDistillation
from lightning_kd.modules.language import IGNORE_INDEX, next_token_labels
from lightning_kd.modules.vocabulary import check_same_vocab, model_vocab, resolve_vocab_size

MIN_SHARED = 0.10
"""Below this share of the text's teacher tokens with a student counterpart (or of the student's predictions
aligned with the teacher's), the pair is warned about: the KD term then sees little of the teacher."""


class CrossTokenizerDistillation(CausalLMDistillation):
    """Token distillation between a teacher and a student that do not share a vocabulary.

    The data module tokenizes each sequence twice (:class:`~lightning_kd.data.PackedTextDataModule` with
    ``teacher_tokenizer``), in its workers: the student's tokens, the teacher's tokens of the same text, and the
    *aligned predictions* — the positions where both tokenizations start a token at the same byte, so the two
    models predict the same next piece of text from the same text before it (:mod:`lightning_kd.data.alignment`).
    Per step::

        loss = (1 − α) · CE(student, its own next tokens)  +  α · D(teacher, student) on the aligned predictions

    normalised by the student's valid tokens over the optimizer step. ``D`` (``loss``):

    - ``span_kl`` (default): the teacher's distribution read through the tokens both vocabularies share (same
      bytes; special tokens by role), the rest of each side's mass in one "other" bucket, then ``divergence`` from
      the core (forward/reverse KL, JSD, skew KLs, TV) at ``T`` (``T²`` applied). Identical tokenizers give exactly
      the same-tokenizer loss.
    - ``uld``: Universal Logit Distillation (Boizard et al. 2024, arXiv:2402.12030), the Wasserstein-1 distance
      between the sorted probability vectors: no map needed, but it only matches how confident the student is.

    Cost per step beyond same-tokenizer KD: the teacher runs on its own tokens (about as many as the student's for
    two BPEs of one corpus); the heads are applied to the aligned rows only, ``chunk_size`` at a time; ULD sorts
    ``V_s + V_t`` values per aligned row.

    Vocabularies are checked by identity on each side: the data's tokenizer against the student, the data's
    ``teacher_tokenizer`` against the teacher (``teacher_vocab``, the ``teacher_ckpt``'s record or its config).
    A live teacher model only (an offline store is keyed by the teacher's own tokens); no on-policy generation
    or hidden-state terms here. Other arguments: as :class:`~lightning_kd.modules.CausalLMDistillation`.

    Args:
        loss: ``span_kl`` or ``uld``.
        teacher_map: for ``span_kl``, what becomes of a teacher token the student's vocabulary lacks:
            ``first_piece`` (default) gives its mass to the student's own first token of its text (the student
            tokenizer run on `` return`` gives ``Ġr``), so the student learns how likely the teacher finds each
            continuation even where it spells it in more tokens; ``shared`` puts it in the "other" bucket, where a
            student whose every token is shared cannot follow it (measured: docs/results.md).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        teacher_ckpt: str | None = None,
        teacher_vocab: str | None = None,
        loss: CrossLoss = "span_kl",
        teacher_map: Literal["shared", "first_piece"] = "first_piece",
        divergence: Divergence | str = "forward_kl",
        alpha: float = 0.5,
        temperature: float = 1.0,
        chunk_size: int | None = 256,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
    ) -> None:
        if loss not in ("uld", "span_kl"):
            raise ValueError(f"loss must be 'span_kl' (shared tokens + other bucket) or 'uld', got {loss!r}.")
        if teacher_map not in ("shared", "first_piece"):
            raise ValueError(f"teacher_map must be 'shared' or 'first_piece', got {teacher_map!r}.")
        super().__init__(
            teacher, student, teacher_ckpt=teacher_ckpt, teacher_vocab=teacher_vocab, divergence=divergence,
            alpha=alpha, temperature=temperature, chunk_size=chunk_size, optimizer=optimizer,
            lr_scheduler=lr_scheduler, scheduler_interval=scheduler_interval,
        )  # fmt: skip
        if getattr(self.teacher, "model", None) is None or not self.teacher.serves_features:
            raise ValueError(
                f"cross-tokenizer distillation needs a live teacher model; a {type(self.teacher).__name__} holds "
                "the teacher's outputs on its own tokens only. Give the teacher model (and teacher_ckpt)."
            )
        self.loss, self.teacher_map = loss, teacher_map
        self._shared: TokenMap | None = None
        self._teacher_size: int | None = None

    def setup(self, stage: str) -> None:
        self.check_strategy(self.chunk_size is not None)
        self.check_saved_folders(student=self.student, teacher=self.teacher.model)
        self._record_data_vocab()
        dm = self._trainer.datamodule if self._trainer is not None else None
        name = type(dm).__name__ if dm is not None else "the data"
        if dm is None or not getattr(dm, "cross_tokenizer", False):
            raise ValueError(
                f"{type(self).__name__} needs batches tokenized for both models: use PackedTextDataModule or "
                "PromptResponseDataModule with teacher_tokenizer=<the teacher's tokenizer> (or, for packed text, "
                "teacher_bpe_vocab_size for the library's BPE)."
            )
        fp, size, _ = self.data_vocab()
        self.loss_vocab_size = resolve_vocab_size(self.head_widths(student=self.student), size, None, name)
        t_size = dm.teacher_vocab_size
        self._teacher_size = resolve_vocab_size(self.head_widths(teacher=self.teacher.model), t_size, None, name)
        t_fp, t_source = self._teacher_vocab
        s_fp, s_source = model_vocab(self.student)
        check_same_vocab([("data", fp, name), ("student", s_fp, s_source)], name)
        check_same_vocab(
            [("data's teacher_tokenizer", dm.teacher_vocab_fingerprint, name), ("teacher", t_fp, t_source)], name
        )
        if t_fp is None and stage == "fit":
            rank_zero_warn(
                f"{type(self).__name__} cannot check that the teacher was trained with the data's teacher_tokenizer: "
                "nothing records the teacher's vocabulary. Pass teacher_vocab: <its tokenizer.json> to check it."
            )
        vocab_map = torch.as_tensor(dm.vocab_map(self.teacher_map))
        if t_size is not None and len(vocab_map) != t_size:
            raise ValueError(f"the vocabulary map has {len(vocab_map)} entries for a teacher tokenizer of {t_size}.")
        self._shared = shared_ids(vocab_map)  # once per run: it reads the map; moved where the rows are (_div_sum)
        self._check_teacher_context(dm)
        if stage == "fit":
            self._warn_if_little_shared(dm)

    def _check_teacher_context(self, dm: Any) -> None:
        limit = getattr(getattr(self.teacher.model, "config", None), "max_position_embeddings", None)
        longest = dm.teacher_longest()
        if isinstance(limit, int) and longest > limit:
            raise ValueError(
                f"the teacher's tokenization of a sequence reaches {longest} tokens but the teacher takes at most "
                f"{limit} positions (its config's max_position_embeddings): lower the data's seq_len (packed text) "
                "or max_length (chat), so the teacher's tokens of each sequence fit its context."
            )

    def _warn_if_little_shared(self, dm: Any) -> None:
        aligned = dm.stats.get("train_aligned")
        if aligned is not None and aligned < MIN_SHARED:
            rank_zero_warn(
                f"only {aligned:.1%} of the student's predictions align with a teacher prediction (both tokenizers "
                f"start a token at the same byte); the KD term sees little of the text. Check the two tokenizers."
            )
        if self.loss == "span_kl":
            mapped = dm.mapped_share(self.teacher_map)
            if mapped < MIN_SHARED:
                rank_zero_warn(
                    f"only {mapped:.1%} of the teacher's tokens in the training text have a student token with the "
                    "same bytes: span_kl compares little more than the 'other' bucket. Use loss: uld, which needs no "
                    "shared tokens."
                )

    def _both(self, batch: Batch) -> tuple[StudentRows, TeacherOutput, Tensor, Tensor]:
        """Both models' rows and the flat aligned positions into each (from the host copy of ``align``)."""
        extra = batch.extra or {}
        if "align" not in extra or "teacher_input_ids" not in extra:
            raise ValueError(
                f"{type(self).__name__}: the batch has no teacher tokenization ('teacher_input_ids', 'align'): use "
                "PackedTextDataModule with teacher_tokenizer."
            )
        student = self.token_loss.student_rows(self.student, batch.inputs)
        # right-padded rows: causal attention never lets a real token see the padding after it, and every aligned
        # position is a real token, so the mask is left out (transformers would read it from the device each step)
        t_inputs = {"input_ids": extra["teacher_input_ids"]}
        teacher = self.token_loss.teacher_output(self.teacher, t_inputs, None)
        host = self.host_copy(extra["align"])
        align = (extra["align"] if host is None else host).cpu()
        l_s, l_t = batch.inputs["input_ids"].shape[1], t_inputs["input_ids"].shape[1]
        rows, cols = (align[:, 0] >= 0).nonzero(as_tuple=True)
        s_flat = rows * l_s + align[rows, 0, cols]
        t_flat = rows * l_t + align[rows, 1, cols]
        device = student.rows.device
        return student, teacher, s_flat.to(device, non_blocking=True), t_flat.to(device, non_blocking=True)

    def _div_sum(self, student: StudentRows, teacher: TeacherOutput, s_flat: Tensor, t_flat: Tensor) -> Tensor:
        t_rows = teacher.hidden if teacher.head is not None else teacher.logits
        s_rows = student.rows.reshape(-1, student.rows.shape[-1]).index_select(0, s_flat)
        t_rows = t_rows.reshape(-1, t_rows.shape[-1]).index_select(0, t_flat)
        s_head, t_head = student.head, teacher.head
        if student.head is None and self.loss_vocab_size is not None:
            s_rows = s_rows[:, : self.loss_vocab_size]
        elif s_head is not None and self.loss_vocab_size is not None:
            s_head = (
                s_head[0][: self.loss_vocab_size],
                None if s_head[1] is None else s_head[1][: self.loss_vocab_size],
            )
        if teacher.head is None and self._teacher_size is not None:
            t_rows = t_rows[:, : self._teacher_size]
        elif t_head is not None and self._teacher_size is not None:
            t_head = (t_head[0][: self._teacher_size], None if t_head[1] is None else t_head[1][: self._teacher_size])
        if self._shared is not None and self._shared.columns.device != s_rows.device:  # once, after the move
            self._shared = self._shared._replace(
                **{k: getattr(self._shared, k).to(s_rows.device) for k in ("teacher_ids", "columns", "into")}
            )
        return cross_tokenizer_div_sum(
            s_rows, t_rows, loss=self.loss, student_head=s_head, teacher_head=t_head, shared=self._shared,
            divergence=self.divergence, temperature=self._temperature, chunk_size=self.chunk_size,
        )  # fmt: skip

    def _ce_sum(self, student: StudentRows, y: Tensor) -> tuple[Tensor, Tensor]:
        if student.head is None:
            rows = student.rows.reshape(-1, student.rows.shape[-1]).float()
            ce = nn.functional.cross_entropy(rows, y.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        else:
            return chunked_cross_entropy(student.rows, *student.head, y, chunk_size=self.chunk_size)
        return ce, (y != IGNORE_INDEX).sum()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack_batch(batch)
        y = next_token_labels(batch.targets)
        student, teacher, s_flat, t_flat = self._both(batch)
        ce_sum, num_valid = self._ce_sum(student, y)
        div_sum = self._div_sum(student, teacher, s_flat, t_flat)
        loss_sum = (1.0 - self._alpha) * ce_sum + self._alpha * div_sum
        n = num_valid.clamp_min(1)
        terms = {"ce": ce_sum.detach() / n, "kd": div_sum.detach() / n}
        self.log_step(loss_sum.detach() / n, terms, batch_idx=batch_idx)
        return self.token_mean(loss_sum, num_valid, y.numel())

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        y = next_token_labels(batch.targets)
        student = self.token_loss.student_rows(self.student, batch.inputs)
        sums = self.token_loss.eval_sums(student, None, y, vocab_size=self.loss_vocab_size)
        self.update_eval(stage, sums, batch, y)
