"""What the causal-LM modules share: dict batches, the one shift, token normalisation over the optimizer step,
vocabulary records and checks, and held-out perplexity/agreement computed from exact sums."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_kd.core.batch import Batch
from lightning_kd.core.lm import head_width
from lightning_kd.models.language import model_folder, model_vocab_fingerprint
from lightning_kd.modules.common import BaseModule

IGNORE_INDEX = -100
VOCAB_RECORD_KEY = "lightning_kd_vocab"
"""Checkpoint key of the vocabulary a language model was trained on: ``{"fingerprint": sha256, "size": n}``."""


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
    ``teacher_loss``, ``teacher_ppl``, ``teacher_acc``, ``agreement`` (student top-1 = teacher top-1), ``kd``."""

    full_state_update = False
    _NAMES = ("count", "ce", "correct", "teacher_ce", "teacher_correct", "agree", "kd")

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
        if bool(self.has_teacher):
            out.update(teacher_loss=self.teacher_ce / n, teacher_acc=self.teacher_correct / n)
            out.update(teacher_ppl=out["teacher_loss"].exp(), agreement=self.agree / n, kd=self.kd / n)
        return {name: value.float() for name, value in out.items()}


def resolve_vocab_size(
    widths: dict[str, int | None], data_size: int | None, given: int | None, data_name: str
) -> int | None:
    """The number of logit columns the loss compares: ``None`` (all) when every head and the tokenizer agree; the
    tokenizer's size when a head is padded past it (the padding ids are left out); an error otherwise."""
    known = {who: w for who, w in widths.items() if w is not None}
    size = given if given is not None else data_size
    if size is not None:
        short = {who: w for who, w in known.items() if w < size}
        if short:
            who, w = next(iter(short.items()))
            source = f"vocab_size={given}" if given is not None else f"the tokenizer of {data_name} ({size} tokens)"
            raise ValueError(
                f"the {who}'s lm head has {w} outputs but {source} needs {size}: the {who} was built for another, "
                f"smaller vocabulary. Build it with vocab_size={size} (or the tokenizer it was trained with)."
            )
        return None if all(w == size for w in known.values()) else size
    if len(set(known.values())) > 1:
        raise ValueError(
            f"the lm heads have different widths ({', '.join(f'{k} {v}' for k, v in known.items())}) and the data "
            "module does not say its tokenizer's size: pass vocab_size=<len(tokenizer)> to compare the shared "
            "columns (padded heads), or use models built for the same tokenizer."
        )
    return None


def check_same_vocab(records: list[tuple[str, str | None, str]], data_name: str) -> None:
    """Refuse models and data whose vocabulary fingerprints differ. ``records``: ``(who, fingerprint, source)``."""
    known = [r for r in records if r[1]]
    for who, fp, source in known[1:]:
        ref_who, ref_fp, ref_source = known[0]
        if fp != ref_fp:
            raise ValueError(
                f"the {who}'s vocabulary ({source}: sha256 {fp[:12]}…) is not the {ref_who}'s ({ref_source}: "
                f"sha256 {ref_fp[:12]}…). Tokenizers are compared by identity, not size: two tokenizers with the "
                "same number of tokens map text to different ids, and distilling across them trains on garbage. "
                f"Use the tokenizer the {who} was trained with for {data_name}{_folder_hint(source, ref_source)}, or "
                f"a {who} trained on this one. Cross-tokenizer distillation (token alignment, as in ULD/GOLD) is not "
                "supported yet."
            )


def _folder_hint(*sources: str) -> str:
    """`` (data: tokenizer: <folder>)`` when one side's vocabulary comes from a model folder's tokenizer."""
    for source in sources:
        if source.startswith("the tokenizer in "):
            return f" (its data module's tokenizer: {source[len('the tokenizer in ') :]})"
    return ""


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
        if "attention_mask" in batch:
            inputs["attention_mask"] = batch["attention_mask"]
        labels = batch.get("labels")
        if labels is None:
            labels = batch["input_ids"]
            if "attention_mask" in batch:
                labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return Batch(inputs, labels, batch.get("index"))

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


def read_vocab_record(path: str | None) -> str | None:
    """The vocabulary fingerprint a lightning-kd checkpoint recorded, if the file has one."""
    if path is None:
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(VOCAB_RECORD_KEY)
    except Exception:  # noqa: BLE001 - the weights loader has already said what is wrong with the file
        return None
    return record.get("fingerprint") if isinstance(record, dict) else None


def vocab_fingerprint_of(value: str) -> str:
    """A vocabulary fingerprint given directly (64 hex digits) or as a tokenizer file/folder to compute it from."""
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    path = os.path.join(value, "tokenizer.json") if os.path.isdir(value) else value
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"teacher_vocab={value!r} is neither a sha256 vocabulary fingerprint nor a tokenizer.json file or a folder "
            "holding one (a transformers model folder saved with its tokenizer)."
        )
    from tokenizers import Tokenizer

    from lightning_kd.data.tokenizer import vocab_fingerprint

    return vocab_fingerprint(Tokenizer.from_file(path))


def model_vocab(model: nn.Module | None) -> tuple[str | None, str]:
    """``(fingerprint, where it comes from)`` of the vocabulary a model was built for: the one recorded in its
    config (``lightning_kd_vocab_fingerprint``), else that of the tokenizer files in the folder it was loaded from
    (a user's model folder); ``(None, "")`` when nothing says."""
    if model is None:
        return None, ""
    recorded = model_vocab_fingerprint(model)
    if recorded:
        return recorded, "its config"
    folder = model_folder(model)
    if folder is None or not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return None, ""
    from transformers import AutoTokenizer

    from lightning_kd.data.tokenizer import vocab_fingerprint

    return vocab_fingerprint(AutoTokenizer.from_pretrained(folder, local_files_only=True)), f"the tokenizer in {folder}"
