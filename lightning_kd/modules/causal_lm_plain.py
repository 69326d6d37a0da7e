"""Plain next-token training of a causal LM: the teacher, and the student-alone baseline."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.lm import token_loss_for_model
from lightning_kd.core.teacher import output_logits
from lightning_kd.modules.common import save_plain_hyperparameters
from lightning_kd.modules.language import LanguageModelBase, next_token_labels
from lightning_kd.modules.vocabulary import check_same_vocab, model_vocab, resolve_vocab_size


def check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None (full logits), got {chunk_size!r}; e.g. 256.")


class CausalLMModule(LanguageModelBase):
    """Train a causal LM on next-token cross-entropy: the teacher, or the student-alone baseline.

    Batches are dicts ``{"input_ids", "attention_mask", "labels"}`` (labels unshifted, ``-100`` where no loss is
    taken), as :class:`~lightning_kd.data.PackedTextDataModule` and
    :class:`~lightning_kd.data.PromptResponseDataModule` yield them. The loss is the mean over the valid tokens of
    the whole optimizer step (see :class:`~lightning_kd.modules.language.LanguageModelBase`). Validation logs
    ``val/loss`` (nats per token), ``val/ppl`` and ``val/acc`` from exact sums over the whole split. Checkpoints
    record the data's vocabulary fingerprint, so a student distilled from this model is checked against it.

    Args:
        model: a ``transformers`` causal LM (e.g. :func:`~lightning_kd.models.llama_lm`).
        chunk_size: apply the lm head and the cross-entropy this many tokens at a time, so the ``(tokens, V)``
            logits never exist in full (exact gradients); ``None``: the model's own full logits.
        optimizer: optimizer over the model's parameters.
        lr_scheduler: optional LR scheduler; an unset ``total_steps`` (OneCycleLR) is filled in.
        scheduler_interval: ``auto``, ``step`` or ``epoch``.
    """

    def __init__(
        self,
        model: nn.Module,
        chunk_size: int | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        save_plain_hyperparameters(self)
        check_chunk_size(chunk_size)
        self.model = model
        self.chunk_size = chunk_size
        self.token_loss = token_loss_for_model(model, chunk_size)

    def lm_network(self) -> nn.Module:
        return self.model

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """The model's logits ``(B, L, V)``."""
        return output_logits(self.model(**inputs), "model")

    def setup(self, stage: str) -> None:
        self.check_strategy(self.chunk_size is not None)
        self.check_saved_folders(model=self.model)
        self._record_data_vocab()
        fp, size, name = self.data_vocab()
        resolve_vocab_size(self.head_widths(model=self.model), size, None, name)
        model_fp, source = model_vocab(self.model)
        check_same_vocab([("model", model_fp, source), ("data", fp, name)], name)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack_batch(batch)
        y = next_token_labels(batch.targets)
        rows = self.token_loss.student_rows(self.model, batch.inputs)
        sums = self.token_loss.sums(rows, None, y)
        loss = self.token_mean(sums.ce_sum, sums.num_valid, y.numel())
        self.log_step(sums.ce_sum.detach() / sums.num_valid.clamp_min(1), batch_idx=batch_idx)
        return loss

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        rows = self.token_loss.student_rows(self.model, batch.inputs)
        y = next_token_labels(batch.targets)
        self.update_eval(stage, self.token_loss.eval_sums(rows, None, y), batch, y)
