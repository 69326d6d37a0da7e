"""What the causal-LM modules share: dict batches, the one shift, token normalisation over the optimizer step,
vocabulary records and checks, and held-out perplexity/agreement computed from exact sums."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_kd.core.batch import Batch
from lightning_kd.core.digest import check_model_folder
from lightning_kd.core.lm import head_width
from lightning_kd.modules.common import BaseModule
from lightning_kd.modules.vocabulary import VOCAB_RECORD_KEY, check_same_vocab

IGNORE_INDEX = -100
_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "index")


def next_token_labels(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The shift, done once: ``out[:, t] = labels[:, t + 1]`` (what position ``t``'s logits predict), and
    ``ignore_index`` at the last position, which has no next token. Same shape as ``labels``, so the models'
    ``(B, L, ·)`` outputs are used as they are, without a copy."""
    if labels.dim() != 2:
        raise ValueError(
            f"labels must be (batch, sequence) token ids with {ignore_index} where no loss is taken, got shape "
            f"{tuple(labels.shape)}."
        )
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), ignore_index)], dim=1)


class TokenSums(Metric):
    """Per-token sums over a whole evaluation set (summed across ranks), turned into means once at the end:
    ``loss`` (mean next-token CE, nats), ``ppl`` = exp(loss), ``acc`` (top-1 = next token) and, with a teacher,
    ``teacher_loss``, ``teacher_ppl``, ``teacher_acc``, ``agreement`` (student top-1 = teacher top-1), ``kd``; and
    ``bpb`` (bits per byte: the CE in bits over the bytes of text the scored tokens stand for) when the batches say
    their tokens' bytes (``token_bytes``), the figure that compares models of different vocabularies."""

    full_state_update = False
    _NAMES = ("count", "ce", "correct", "teacher_ce", "teacher_correct", "agree", "kd", "bytes")

    def __init__(self) -> None:
        super().__init__()
        for name in self._NAMES:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("has_teacher", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, sums: dict[str, Tensor]) -> None:
        for name, value in sums.items():
            state = getattr(self, name)
            state += value.to(state.dtype)
        if "agree" in sums:
            self.has_teacher.fill_(1)

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp_min(1)
        out = {"loss": self.ce / n, "acc": self.correct / n}
        out["ppl"] = out["loss"].exp()
        if bool(self.bytes > 0):
            out["bpb"] = self.ce / (self.bytes * math.log(2))
        if bool(self.has_teacher):
            out.update(teacher_loss=self.teacher_ce / n, teacher_acc=self.teacher_correct / n)
            out.update(teacher_ppl=out["teacher_loss"].exp(), agreement=self.agree / n, kd=self.kd / n)
        return {name: value.float() for name, value in out.items()}


class LanguageModelBase(BaseModule):
    """Shared by :class:`~lightning_kd.modules.causal_lm.CausalLMModule` and
    :class:`~lightning_kd.modules.causal_lm.CausalLMDistillation` (see their docstrings).

    Token normalisation: each micro-batch returns ``Σ_token loss / c`` with a fixed ``c`` (its first batch's
    positions); in ``on_before_optimizer_step`` — after the backward passes of all micro-batches, before
    gradient clipping — the gradients are multiplied by ``k·W·c / N``, where ``N`` is the number of valid tokens
    of the whole optimizer step summed over ranks (one all-reduce of a device scalar, no host sync), ``k`` the
    gradient accumulation that Lightning divides by and ``W`` the ranks DDP/FSDP average over. The update is
    then exactly that of the mean over all the step's valid tokens, however they fall into micro-batches and
    ranks (trl #4719: per-micro-batch means weight short batches too much).
    """

    checks_class_labels = False

    def __init__(self, optimizer: Any, lr_scheduler: Any, scheduler_interval: Literal["auto", "step", "epoch"]):
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        self.val_sums = TokenSums()
        self.test_sums = TokenSums()
        self._norm: float | None = None
        self._step_tokens: Tensor | None = None
        self.vocab_record: dict[str, Any] | None = None  # the data's tokenizer, recorded in checkpoints

    def lm_network(self) -> nn.Module:
        """The language model being trained."""
        raise NotImplementedError

    # -- batches --------------------------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> Batch:
        """``{"input_ids", "attention_mask", "labels"}`` → ``Batch(inputs={"input_ids", "attention_mask"},
        targets=labels)``; without ``labels`` the inputs themselves are the targets (plain text)."""
        if not isinstance(batch, dict) or "input_ids" not in batch:
            found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(
                f"{type(self).__name__} takes dict batches with 'input_ids' (and 'attention_mask', 'labels' with "
                f"-100 where no loss is taken), got {found}: use PackedTextDataModule or PromptResponseDataModule, "
                "or override unpack_batch."
            )
        inputs = {"input_ids": batch["input_ids"]}
        if "attention_mask" in batch and not self._no_padding(batch["attention_mask"]):
            inputs["attention_mask"] = batch["attention_mask"]
        labels = batch.get("labels")
        if labels is None:
            labels = batch["input_ids"]
            if "attention_mask" in batch:
                labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        extra = {k: v for k, v in batch.items() if k not in _BATCH_KEYS}
        return Batch(inputs, labels, batch.get("index"), extra or None)

    def _no_padding(self, mask: Tensor) -> bool:
        """Whether a training batch's attention mask is known to be all ones from the loader's host copy (packed
        text always is): the models then get none, which gives the same causal attention and spares
        transformers a read of the mask from the device (to see whether it can skip it) in every forward."""
        host = self.host_copy(mask)
        return host is not None and bool(host.all())

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Per-sequence summed next-token negative log-likelihood ``(B,)`` (the teacher-free score of a text)."""
        batch = self.unpack_batch(batch)
        logits = self.lm_network()(**batch.inputs).logits.float()
        y = next_token_labels(batch.targets)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")
        return nll.sum(1)

    # -- normalisation over the optimizer step -----------------------------------------------------------
    def token_mean(self, loss_sum: Tensor, num_valid: Tensor, positions: int) -> Tensor:
        """The loss to backpropagate for a micro-batch's summed loss (see the class docstring). Outside a
        Trainer's training loop: the micro-batch's own mean."""
        if self._trainer is None or not self.training:
            return loss_sum / num_valid.clamp_min(1)
        if self._norm is None:
            self._norm = float(max(1, positions))
        count = num_valid.detach().float()
        self._step_tokens = count if self._step_tokens is None else self._step_tokens + count
        return loss_sum / self._norm

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._step_tokens is None:
            return
        trainer = self.trainer
        total = trainer.strategy.reduce(self._step_tokens, reduce_op="sum")
        scale = (trainer.accumulate_grad_batches * trainer.world_size * self._norm) / total.clamp_min(1)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale.to(grads[0].dtype))
        self._step_tokens = None

    def check_strategy(self, chunked: bool) -> None:
        """Refuse what is not supported yet: the chunked head under a sharding strategy (the lm head's weight is
        read outside the model's forward, where FSDP/DeepSpeed hold only a shard), and DeepSpeed (which owns
        the gradients the step normalisation rescales)."""
        if self._trainer is None:
            return
        name = type(self.trainer.strategy).__name__
        if "DeepSpeed" in name:
            raise ValueError(
                f"{type(self).__name__} does not support {name} yet: its token normalisation rescales gradients in "
                "on_before_optimizer_step, which DeepSpeed manages itself. Use strategy: ddp or fsdp."
            )
        if chunked and ("FSDP" in name or "ModelParallel" in name):
            raise ValueError(
                f"chunk_size is set but the strategy is {name}: the chunked loss reads the lm heads' weights outside "
                "the models' forward, where a sharding strategy holds only a shard of them. Set chunk_size: null "
                "(full logits) under FSDP, or use strategy: ddp."
            )

    # -- vocabulary -----------------------------------------------------------------------------------
    def data_vocab(self) -> tuple[str | None, int | None, str]:
        """``(fingerprint, size, name)`` of the data module's tokenizer, when it says them."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return None, None, "the data"
        fp, size = getattr(dm, "vocab_fingerprint", None), getattr(dm, "vocab_size", None)
        return (fp if isinstance(fp, str) else None), (size if isinstance(size, int) else None), type(dm).__name__

    @staticmethod
    def check_saved_folders(**networks: nn.Module | None) -> None:
        """Each network loaded from a folder :func:`~lightning_kd.callbacks.lm_export.save_language_model` wrote
        is checked against its ``SHA256SUMS`` (a file changed or damaged since is refused, by name)."""
        for who, network in networks.items():
            if network is not None:
                check_model_folder(network, who)

    def _record_data_vocab(self) -> None:
        fp, size, _ = self.data_vocab()
        if fp is not None:
            self.vocab_record = {"fingerprint": fp, "size": size}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.vocab_record is not None:
            checkpoint[VOCAB_RECORD_KEY] = dict(self.vocab_record)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get(VOCAB_RECORD_KEY)
        if not isinstance(saved, dict) or self._trainer is None:
            return
        fp, _, name = self.data_vocab()
        check_same_vocab([("checkpoint", saved.get("fingerprint"), "the checkpoint"), ("data", fp, name)], name)

    def head_widths(self, **models: nn.Module) -> dict[str, int | None]:
        return {who: head_width(model) for who, model in models.items()}

    # -- evaluation -----------------------------------------------------------------------------------
    def update_eval(self, stage: Literal["val", "test"], sums: dict[str, Tensor], batch: Batch, labels: Tensor) -> None:
        """Add a batch's evaluation sums, with the bytes of text its scored tokens stand for when the batch says
        them (``token_bytes``, ``(B, L)``; ``labels`` already shifted)."""
        token_bytes = (batch.extra or {}).get("token_bytes")
        if token_bytes is not None:
            shifted = next_token_labels(token_bytes, 0)
            sums = {**sums, "bytes": shifted.masked_fill(labels == IGNORE_INDEX, 0).sum()}
        (self.val_sums if stage == "val" else self.test_sums).update(sums)

    def log_eval(self, stage: Literal["val", "test"]) -> None:
        sums = self.val_sums if stage == "val" else self.test_sums
        if not bool(sums.count > 0) and not sums._update_count:
            return
        values = sums.compute()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("loss", "ppl"))
        sums.reset()
        if stage == "val" and not math.isfinite(float(values["loss"])):
            rank_zero_warn(f"{type(self).__name__}: the validation loss is {float(values['loss'])}.")

    def on_validation_epoch_end(self) -> None:
        self.log_eval("val")

    def on_test_epoch_end(self) -> None:
        self.log_eval("test")
