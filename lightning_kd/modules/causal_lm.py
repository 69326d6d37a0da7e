"""Token-level distillation of a causal LM into a smaller one. ``CausalLMModule`` (plain next-token training: the
teacher, the student-alone baseline) lives in :mod:`.causal_lm_plain` and is re-exported here."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.feature_term import FeatureTerm
from lightning_kd.core.lm import CausalLMTeacher, Generation, StudentRows, TokenFeatureTerms, TokenLoss
from lightning_kd.core.teacher import TeacherBase, TeacherOutput, output_logits
from lightning_kd.losses.divergence import Divergence, as_divergence
from lightning_kd.modules.causal_lm_plain import CausalLMModule, check_chunk_size
from lightning_kd.modules.common import dry_run_feature_terms, save_plain_hyperparameters
from lightning_kd.modules.language import IGNORE_INDEX, LanguageModelBase, next_token_labels
from lightning_kd.modules.temperature_alpha import TemperatureAlpha
from lightning_kd.modules.vocabulary import (
    check_same_vocab,
    model_vocab,
    read_vocab_record,
    resolve_vocab_size,
    vocab_fingerprint_of,
)


class CausalLMDistillation(TemperatureAlpha, LanguageModelBase):
    """Distil a frozen causal-LM ``teacher`` into a smaller causal-LM ``student``, token by token.

    Loss over the positions that have a label (``labels != -100``; logits at ``t`` predict token ``t + 1``, the
    shift done once by :func:`~lightning_kd.modules.language.next_token_labels`)::

        loss = (1 − α) · CE(student, next token)  +  α · D(p_teacher, p_student)     (per valid token)

    normalised by the valid tokens of the whole optimizer step (exact under gradient accumulation and DDP). ``D``
    is a :class:`~lightning_kd.losses.divergence.Divergence` (forward/reverse KL, generalised JSD(β), skew KLs,
    total variation) at temperature ``T`` (``T²`` applied), in fp32 whatever the models' dtype.

    How the loss is computed is a strategy (:mod:`lightning_kd.core.lm.token_loss`) that the teacher picks once, at
    construction, from what it provides: with ``chunk_size`` set (default) a live teacher gives its final hidden
    states and lm head and both heads are applied ``chunk_size`` tokens at a time, so the ``(tokens, V)`` logits of
    the two models never exist in full (a head that is not ``hidden @ W.T + b``, e.g. logit soft-capping, is
    refused by name); ``chunk_size: null`` compares full logits; an offline
    :class:`~lightning_kd.cache.lm_teacher.CachedLMTeacher` gives its stored top-k. Override
    :meth:`choose_token_loss` to bring another.

    Vocabularies are checked by identity: the data's tokenizer fingerprint is compared with the teacher's (from
    ``teacher_vocab``, the ``teacher_ckpt``'s record, or the model config's ``lightning_kd_vocab_fingerprint``)
    and the student's (its config); any difference is refused naming both. A head wider than the tokenizer
    (padded vocabularies, e.g. 151936 vs 152064) is compared on the tokenizer's ids only.

    Args:
        teacher: the trained causal LM, or a teacher component (:class:`~lightning_kd.core.lm.CausalLMTeacher` with
            its own ``ckpt``/``save_weights``, :class:`~lightning_kd.cache.lm_teacher.CachedLMTeacher`).
        student: the causal LM to train.
        teacher_ckpt: weights for a plain teacher model (a ``CausalLMModule`` checkpoint or a ``state_dict`` file).
        teacher_vocab: the teacher's vocabulary: a sha256 fingerprint, a ``tokenizer.json`` or a folder holding
            one; ``None``: read from ``teacher_ckpt`` or the teacher's config.
        divergence: the divergence ``D`` and its shape parameters, e.g. ``{kind: jsd, beta: 0.5}`` in YAML, or a
            kind's name (``forward_kl``: Hinton/torchtune; ``reverse_kl``: MiniLLM; ``jsd``: GKD; ``skew_*``:
            DistiLLM; ``tv``).
        alpha: weight of the divergence in ``[0, 1]``; the CE gets ``1 − α``.
        temperature: ``T > 0``; both distributions are softened by it and the divergence multiplied by ``T²``.
        chunk_size: tokens per chunk of the fused head+loss; ``None``: full logits.
        vocab_size: compare only the first ``vocab_size`` logit columns; ``None``: the data's tokenizer size.
        generation: on-policy (GKD's λ) and sequence-level KD settings (:class:`~lightning_kd.core.lm.Generation`):
            with probability ``on_policy`` a step distils on the student's own continuation of each sequence's
            first ``prompt_len`` tokens (loss ``α · D`` only: no CE on its own samples), with probability
            ``sequence_kd`` on the teacher's (CE and ``D``). Needs a live teacher model.
        feature_terms: hidden-state terms (:class:`~lightning_kd.FeatureTerm`: e.g. ``FeatureMatchLoss`` between
            ``model.layers.1`` of the student and ``model.layers.3`` of the teacher, ``connector: true`` for a
            linear map between widths), on the tokens that have a label only
            (:class:`~lightning_kd.core.lm.TokenFeatureTerms`); each adds ``weight · mean over those tokens``,
            normalised over the optimizer step like the token terms. Needs a live teacher.
        optimizer, lr_scheduler, scheduler_interval: as in :class:`CausalLMModule`.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        teacher_ckpt: str | None = None,
        teacher_vocab: str | None = None,
        divergence: Divergence | str = "forward_kl",
        alpha: float = 0.5,
        temperature: float = 1.0,
        chunk_size: int | None = 256,
        vocab_size: int | None = None,
        generation: Generation = Generation(),  # noqa: B008 - a frozen dataclass: immutable
        feature_terms: list[FeatureTerm] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        save_plain_hyperparameters(self)
        self.divergence = as_divergence(divergence)
        check_chunk_size(chunk_size)
        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 (the tokenizer's size), got {vocab_size}.")
        if isinstance(teacher, TeacherBase):
            if teacher_ckpt is not None:
                raise ValueError("teacher is a component: set ckpt on it, not teacher_ckpt on the module.")
            self.teacher = teacher
        else:
            self.teacher = CausalLMTeacher(teacher, ckpt=teacher_ckpt)
        self.student = student
        self.chunk_size, self.vocab_size_arg = chunk_size, vocab_size
        self.loss_vocab_size: int | None = vocab_size
        self.token_loss = self.choose_token_loss()
        self.token_loss.check_student(student)
        self._teacher_vocab = self._teacher_fingerprint(teacher_vocab, teacher_ckpt)
        self.init_temperature_alpha(temperature, alpha)
        self.feature_terms = TokenFeatureTerms(feature_terms or [])
        if len(self.feature_terms):
            if not self.teacher.serves_features:
                raise ValueError(
                    f"hidden-state terms {[t.name for t in self.feature_terms]} need the teacher's layers, which a "
                    f"{type(self.teacher).__name__} cannot give (an offline store holds no model to hook); use a "
                    "live teacher for them, or drop feature_terms."
                )
            self.feature_terms.bind(student, self.teacher.networks)
        self.generation = generation = Generation(**generation) if isinstance(generation, dict) else generation
        if generation.active and getattr(self.teacher, "model", None) is None:
            raise ValueError(
                "on-policy / sequence-level KD needs the teacher's model to score (or write) generated text; give "
                f"the {type(self.teacher).__name__} its `model`, or set on_policy and sequence_kd to 0."
            )
        self._special_ids: tuple[int | None, int] = (None, 0)  # (eos, pad), from the data module at setup
        self._seed = 0  # the run's seed (PL_GLOBAL_SEED), read at fit setup: the generation draws follow it

    def choose_token_loss(self) -> TokenLoss:
        """The token-loss strategy, chosen once: the one the teacher declares fits what it provides for this
        ``chunk_size``. Override to bring another (:class:`~lightning_kd.core.lm.TokenLoss`)."""
        return self.teacher.token_loss(self.chunk_size)

    def _teacher_fingerprint(self, given: str | None, ckpt: str | None) -> tuple[str | None, str]:
        if given is not None:
            return vocab_fingerprint_of(given), f"teacher_vocab={given!r}"
        recorded = read_vocab_record(ckpt)
        if recorded:
            return recorded, f"teacher_ckpt {ckpt!r}"
        return model_vocab(getattr(self.teacher, "model", None))

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of every named term: ``ce`` = 1 − α, ``kd`` = α, then each hidden-state term's ``weight``."""
        return {"ce": 1.0 - self._alpha, "kd": self._alpha, **self.feature_terms.weights}

    def lm_network(self) -> nn.Module:
        return self.student

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """The student's logits ``(B, L, V)``."""
        return output_logits(self.student(**inputs), "student")

    # -- set-up: vocabularies ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.check_strategy(self.chunk_size is not None)
        self.check_saved_folders(student=self.student, teacher=getattr(self.teacher, "model", None))
        self._record_data_vocab()
        fp, size, name = self.data_vocab()
        widths = self.head_widths(student=self.student, teacher=getattr(self.teacher, "model", None))
        self.loss_vocab_size = resolve_vocab_size(widths, size, self.vocab_size_arg, name)
        teacher_fp, teacher_source = self._teacher_vocab
        student_fp, student_source = model_vocab(self.student)
        records = [("data", fp, name), ("teacher", teacher_fp, teacher_source), ("student", student_fp, student_source)]
        check_same_vocab(records, name)
        if teacher_fp is None and stage == "fit" and not self.teacher.checks_vocab:
            rank_zero_warn(
                "CausalLMDistillation cannot check that the teacher was trained with the data's tokenizer: nothing "
                "records the teacher's vocabulary (no teacher_vocab, no record in teacher_ckpt, none in its "
                "config). Pass teacher_vocab: <its tokenizer.json> to check it."
            )
        if stage == "fit":  # an offline teacher opens and checks its store here
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            self.teacher.prepare_fit(datamodule, None)
            eos = getattr(datamodule, "eos_token_id", None)
            self._special_ids = (eos, getattr(datamodule, "pad_token_id", None) or eos or 0)
            self._seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            if self.feature_terms.needs_dry_run:
                batch = self.example_batch("hidden-state terms size their connectors from it")
                dry_run_feature_terms(self, self.feature_terms, lambda: self._outputs(batch, training=False))

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.teacher.release()

    # -- the step: unpack, (generate), both models, the strategy's sums, weighted sum, log --------------------
    def _outputs(self, batch: Batch, training: bool) -> tuple[StudentRows, TeacherOutput]:
        student = self.token_loss.student_rows(self.student, batch.inputs)
        index = None
        if training and batch.index is not None:  # the loader's host copy: a store reads it without a device wait
            host = self.host_copy(batch.index)
            index = batch.index if host is None else host
        teacher = self.token_loss.teacher_output(self.teacher, batch.inputs, index)
        return student, teacher

    def _options(self) -> dict[str, Any]:
        return {"divergence": self.divergence, "temperature": self._temperature, "vocab_size": self.loss_vocab_size}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack_batch(batch)
        source = self.generation.draw(self.global_step, self._seed)
        if source != "data":
            model = self.student if source == "student" else self.teacher.model
            host_mask = self.host_copy(batch.inputs.get("attention_mask"))
            batch = self.generation.generate(model, batch, *self._special_ids, host_mask=host_mask)
        y = next_token_labels(batch.targets)
        with self.feature_terms.capturing():
            student, teacher = self._outputs(batch, training=True)
        sums = self.token_loss.sums(student, teacher, y, **self._options())
        ce_weight = 0.0 if source == "student" else 1.0 - self._alpha  # no CE on the student's own samples
        loss_sum = ce_weight * sums.ce_sum + self._alpha * sums.div_sum
        n = sums.num_valid.clamp_min(1)
        terms = {"ce": sums.ce_sum.detach() / n, "kd": sums.div_sum.detach() / n}
        if len(self.feature_terms):  # token means over the valid tokens, made sums like the token terms
            for name, value in self.feature_terms.compute(mask=y != IGNORE_INDEX, rows=self._host_rows(batch)).items():
                loss_sum = loss_sum + self.feature_terms.weights[name] * value * sums.num_valid
                terms[name] = value.detach()
        loss = self.token_mean(loss_sum, sums.num_valid, y.numel())
        self.log_step(loss_sum.detach() / n, terms, batch_idx=batch_idx)
        return loss

    def _host_rows(self, batch: Batch) -> Tensor | None:
        """The flat positions with a next-token label, from the loader's host copy of the labels (none for a batch
        the step generated): the hidden-state terms gather them without a device read."""
        host = self.host_copy(batch.targets)
        if host is None:
            return None
        return (next_token_labels(host) != IGNORE_INDEX).flatten().nonzero().squeeze(1)

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        student, teacher = self._outputs(batch, training=False)
        y = next_token_labels(batch.targets)
        self.update_eval(stage, self.token_loss.eval_sums(student, teacher, y, **self._options()), batch, y)


__all__ = ["CausalLMDistillation", "CausalLMModule"]
