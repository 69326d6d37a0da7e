"""DistillationModule: a teacher component, a trainable student, a weighted sum of named loss terms."""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.feature_term import FeatureTerm
from lightning_kd.core.feature_terms import FeatureTerms
from lightning_kd.core.model_info import resolve_num_classes, run_model
from lightning_kd.core.teacher import TeacherOutput, as_teacher, output_logits
from lightning_kd.losses import KDLoss
from lightning_kd.modules.common import BaseModule, dry_run_feature_terms, save_plain_hyperparameters, to_channels_last
from lightning_kd.modules.temperature_alpha import TemperatureAlpha


class DistillationModule(TemperatureAlpha, BaseModule):
    """Distil a frozen ``teacher`` into a ``student`` (Hinton et al., 2015, arXiv:1503.02531).

    Loss, a weighted sum of named terms (each logged as ``train/loss_<name>``)::

        loss = (1 − α) · CE(student, y)  +  α · T² · KL(softmax(t/T) ‖ softmax(s/T))  +  Σ w_k · term_k
               └── "ce" ──────────────┘     └── "kd" ───────────────────────────┘     └ feature_terms ┘

    The teacher is a component (:class:`~lightning_kd.Teacher`, built from a plain model and ``teacher_ckpt``, or
    given as a component such as ``Teacher(model, ckpt, eval_mode, save_weights)`` or
    :class:`~lightning_kd.CachedTeacher`): frozen,
    in eval mode whatever calls ``.train()``, run under ``no_grad``, fp32 outputs, left out of checkpoints
    and put back on load. Feature and relation terms (:class:`~lightning_kd.FeatureTerm`) name student and
    teacher layers by module path; one :class:`~lightning_kd.FeatureTerms` component hooks them and sizes
    any connectors from one dry forward pass in ``setup``, before the optimizer exists (the example comes
    from ``example_input_array`` when set, else the first training batch of the data module).

    Subclassing: override :meth:`unpack_batch` (how a batch becomes ``Batch(inputs, targets, index)``),
    :meth:`forward_student` (how the student is called) or :meth:`compute_losses` (the named terms), rather
    than ``training_step``. HuggingFace-style models need no override: dict inputs are passed as keyword
    arguments and ``.logits`` is read from the output.

    Args:
        teacher: the trained network (YAML: ``class_path``/``init_args``) or a teacher component (to keep its
            weights in checkpoints or let ``.train()`` reach its BatchNorm: ``lightning_kd.Teacher`` with
            ``save_weights: true`` / ``eval_mode: false``).
        student: the network to train.
        teacher_ckpt: weights for a plain teacher network: a ClassificationModule/DistillationModule
            checkpoint or a ``state_dict`` file. ``None`` keeps the teacher as built.
        temperature: softening temperature ``T > 0``, owned here: passed to ``distill_loss`` on every call, moved
            by a TemperatureScheduler.
        alpha: weight of the KD term in ``[0, 1]``; CE gets ``1 − α`` (a LossWeightScheduler may change it).
        num_classes: classes; inferred from the student when ``None``.
        optimizer: optimizer over the student's (and other trainable) parameters only.
        lr_scheduler: optional LR scheduler; an unset ``total_steps`` (OneCycleLR) is filled in.
        scheduler_interval: ``auto`` (per step when ``total_steps`` was filled, else per epoch), ``step`` or
            ``epoch``.
        distill_loss: the logit term ``kd`` (default ``KDLoss()``, forward KL): any loss module taking
            ``(student_logits, teacher_logits)``, plus ``targets`` and/or ``temperature`` when its ``forward`` names
            them (they are passed by keyword), e.g. ``KDLoss`` with another ``divergence``, ``DKDLoss``,
            ``DISTLoss``, ``LogitStandardizedKDLoss``, ``ReverseKDLoss``, ``JSKDLoss``.
        feature_terms: feature/relation loss terms on intermediate layers (see :class:`FeatureTerm`).
        compile: compile the student and the teacher networks in place with ``torch.compile`` in
            :meth:`configure_model`.
        channels_last: store the student's and the teacher's weights in ``channels_last`` memory format (in
            :meth:`configure_model`): convolutions then run in the layout oneDNN (CPU) and cuDNN with tensor
            cores (GPU) prefer — about 20 % faster here for the Fashion-MNIST ResNet teacher on CPU. No effect
            on models without 4-d weights.

    Example:
        >>> from lightning_kd.models import MLP
        >>> m = DistillationModule(MLP(64, 10, [256]), MLP(64, 10, [16]), temperature=4.0, alpha=0.9)
        >>> sorted(m.loss_weights)
        ['ce', 'kd']
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        teacher_ckpt: str | None = None,
        temperature: float = 4.0,
        alpha: float = 0.9,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        distill_loss: nn.Module | None = None,
        feature_terms: list[FeatureTerm] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        save_plain_hyperparameters(self)
        self.teacher = as_teacher(teacher, teacher_ckpt)
        self.student = student
        num_classes = resolve_num_classes(self.teacher.num_classes, student, num_classes)
        self.num_classes = num_classes
        self.compile_models = compile  # not ``self.compile``: that is nn.Module's method
        self._compiled = False
        self.channels_last = channels_last

        distill_loss = distill_loss if distill_loss is not None else KDLoss()
        params = inspect.signature(distill_loss.forward).parameters
        self._kd_takes = {name for name in ("targets", "temperature") if name in params}
        self.loss_terms = nn.ModuleDict({"kd": distill_loss})
        self.feature_terms = FeatureTerms(feature_terms or [])
        if len(self.feature_terms) and not self.teacher.serves_features:
            raise ValueError(
                f"feature terms {[t.name for t in self.feature_terms]} need the teacher's intermediate features, "
                f"which a {type(self.teacher).__name__} cannot give (it holds no live model to hook); use a live "
                "teacher for feature terms, or drop them."
            )
        self.feature_terms.bind(student, self.teacher.networks)
        self.init_temperature_alpha(temperature, alpha)
        self._build_metrics(num_classes)
        self.val_teacher_acc = self.val_acc.clone()
        self.test_teacher_acc = self.test_acc.clone()
        self._records: dict[str, Tensor] = {}

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of every named term: ``ce`` = 1 − α, ``kd`` = α, then each feature term's ``weight``."""
        weights = {"ce": 1.0 - self._alpha, "kd": self._alpha}
        if len(self.feature_terms):
            weights.update(self.feature_terms.weights)
        return weights

    # -- the models -----------------------------------------------------------------------------------
    def forward_student(self, inputs: Any) -> Tensor:
        """Student logits for ``inputs`` (dict inputs are passed as keyword arguments)."""
        return output_logits(run_model(self.student, inputs, "student"), "student")

    def forward_teacher(self, batch: Batch, training: bool) -> TeacherOutput:
        """The teacher's answer for ``batch``. In training the sample indices and the epoch go with it, so a
        cached teacher can look up the exact view it stored (the loader's host copy of the indices, when there
        is one: no device read)."""
        if training and batch.index is not None:
            return self.teacher(batch.inputs, self._host_index(batch), self.current_epoch)
        return self.teacher(batch.inputs)

    def _host_index(self, batch: Batch) -> Tensor | None:
        """The loader's host copy of the sample indices (read without a device wait), else the batch's own."""
        host = self.host_copy(batch.index)
        return batch.index if host is None else host

    def forward(self, inputs: Any) -> Tensor:
        return self.forward_student(inputs)

    def configure_model(self) -> None:
        """With ``compile=True``, compile the student and the teacher networks in place (``Module.compile``:
        state-dict keys get no ``_orig_mod.`` prefix). Feature hooks are attached first:
        Dynamo does not guard on module hooks, so a compiled module keeps the hooks it had when traced."""
        if self.channels_last:
            to_channels_last(self.student, *self.teacher.networks)
        if not self.compile_models or self._compiled:
            return  # Lightning calls this hook on every fit/validate/test: compile once
        self.feature_terms.attach()
        self.student.compile()
        for network in self.teacher.networks:
            network.compile()
        self._compiled = True

    # -- fit set-up: the teacher's preparation and the feature-term dry run ------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        self.teacher.prepare_fit(datamodule, max_epochs)
        if self.feature_terms.needs_dry_run:
            names = [t.name for t in self.feature_terms if t.needs_connectors]
            self._dry_run(self.example_batch(f"feature terms {names} size their connectors from it"))

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.teacher.release()

    def _dry_run(self, batch: Batch) -> None:
        dry_run_feature_terms(
            self,
            self.feature_terms,
            lambda: (self.forward_student(batch.inputs), self.forward_teacher(batch, training=False)),
            batch.index,
        )

    # -- loss ---------------------------------------------------------------------------------------
    def compute_losses(self, student_logits: Tensor, teacher: TeacherOutput, batch: Batch) -> dict[str, Tensor]:
        """Unweighted value of every named term (feature terms read the features captured in this step)."""
        targets = batch.targets
        return {
            "ce": F.cross_entropy(student_logits.float(), targets),
            "kd": self.kd_term(student_logits, teacher.logits, targets),
            **(self.feature_terms.compute(self._host_index(batch)) if len(self.feature_terms) else {}),
        }

    def kd_term(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        """The logit term: ``distill_loss`` with the module's temperature (and the targets, if it takes them)."""
        extra: dict[str, Any] = {}
        if "targets" in self._kd_takes:
            extra["targets"] = targets
        if "temperature" in self._kd_takes:
            extra["temperature"] = self._temperature
        return self.loss_terms["kd"](student_logits, teacher_logits, **extra)

    def weighted_sum(self, terms: dict[str, Tensor]) -> Tensor:
        """``Σ w_name · term_name`` with :attr:`loss_weights`."""
        weights = self.loss_weights
        total = None
        for name, value in terms.items():
            term = weights[name] * value
            total = term if total is None else total + term
        return total

    def record(self, name: str, value: Tensor) -> None:
        """Log a per-step value with the loss terms, as ``train/<name>`` (e.g. a per-teacher KD term)."""
        self._records[name] = value

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack_batch(batch)
        if self._records:
            self._records.clear()
        with self.feature_terms.capturing():
            student_logits = self.forward_student(batch.inputs)
            teacher = self.forward_teacher(batch, training=True)
        terms = self.compute_losses(student_logits, teacher, batch)
        loss = self.weighted_sum(terms)
        self.log_train(loss, terms, batch_idx=batch_idx)
        return loss

    def log_train(
        self, loss: Tensor, terms: dict[str, Tensor], step: int | None = None, batch_idx: int | None = None
    ) -> None:
        """Log the step's loss, its named terms, what was recorded, the temperature and α (device-side, at
        logging steps only: :meth:`log_step`)."""
        self.log_step(loss, terms, self._records, step, batch_idx)

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        student_logits = self.forward_student(batch.inputs)
        teacher = self.forward_teacher(batch, training=False)
        acc = self.val_acc if stage == "val" else self.test_acc
        acc(student_logits, batch.targets)
        self.log(f"{stage}/loss", F.cross_entropy(student_logits.float(), batch.targets), sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=True)
        if teacher.logits is not None:  # a cache without a model has nothing to say on held-out data
            teacher_acc = self.val_teacher_acc if stage == "val" else self.test_teacher_acc
            teacher_acc(teacher.logits, batch.targets)
            self.log(f"{stage}/teacher_acc", teacher_acc)
