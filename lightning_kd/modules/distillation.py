"""DistillationModule: a frozen teacher, a trainable student, a weighted sum of named loss terms."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_kd.base import BaseModule, built_by_cli, infer_num_classes
from lightning_kd.checkpoint import load_teacher_weights
from lightning_kd.feature_mixin import FeatureTermsMixin
from lightning_kd.losses import KDLoss
from lightning_kd.terms import FeatureTerm


def _resolve_temperature(temperature: float | None, distill_loss: nn.Module | None) -> float:
    """The module's T: given, else the ``distill_loss``'s own, else 4; both given and different is an error."""
    own = getattr(distill_loss, "temperature", None) if distill_loss is not None else None
    own = float(own) if isinstance(own, (Tensor, float, int)) else None
    if temperature is None:
        return own if own is not None else 4.0
    if own is not None and abs(own - temperature) > 1e-9:
        raise ValueError(
            f"temperature={temperature} but distill_loss {type(distill_loss).__name__} has temperature={own}; "
            "set it in one place (leave the module's temperature unset to use the loss's)."
        )
    return float(temperature)


class DistillationModule(FeatureTermsMixin, BaseModule):
    """Distil a frozen ``teacher`` into a ``student`` (Hinton et al., 2015, arXiv:1503.02531).

    Loss, a weighted sum of named terms (each logged as ``train/loss_<name>``)::

        loss = (1 − α) · CE(student, y)  +  α · T² · KL(softmax(t/T) ‖ softmax(s/T))  +  Σ w_k · term_k
               └── "ce" ──────────────┘     └── "kd" ───────────────────────────┘     └ feature_terms ┘

    Feature and relation terms (:class:`~lightning_kd.FeatureTerm`) name student/teacher layers by module
    path; the module hooks them (through the :class:`~lightning_kd.callbacks.FeatureHooks` callback it adds
    itself) and builds any connectors from one dry forward pass in ``setup``, before the optimizer exists.

    The teacher is frozen (``requires_grad`` off, never in the optimizer), stays in eval mode whatever calls
    ``.train()``, runs under ``torch.no_grad()`` and its logits are cast to fp32 before any loss.
    Checkpoints leave its weights out unless ``save_teacher=True``; resuming and ``load_from_checkpoint``
    put the live teacher back.

    Subclassing: override :meth:`unpack_batch` (how a batch becomes ``(inputs, targets)``) and/or
    :meth:`forward_teacher` (how the teacher is called, e.g. a HuggingFace model returning ``.logits``)
    rather than ``training_step``. :meth:`forward_student` is the student-side twin.

    Args:
        teacher: the trained network (YAML: ``class_path``/``init_args``).
        student: the network to train.
        teacher_ckpt: weights for the teacher: a ClassificationModule/DistillationModule checkpoint or a
            ``state_dict`` file. ``None`` keeps the teacher as built.
        temperature: softening temperature ``T > 0`` (a TemperatureScheduler may change it); ``None`` takes
            ``distill_loss``'s own temperature, or 4.
        alpha: weight of the KD term in ``[0, 1]``; CE gets ``1 − α`` (a LossWeightScheduler may change it).
        num_classes: classes; inferred from the student when ``None``.
        optimizer: optimizer over the student's (and other trainable) parameters only.
        lr_scheduler: optional LR scheduler; an unset ``total_steps`` (OneCycleLR) is filled in.
        scheduler_interval: ``auto`` (per step when ``total_steps`` was filled, else per epoch), ``step`` or
            ``epoch``.
        distill_loss: the logit term ``kd`` (default ``KDLoss(temperature)``): any loss module taking
            ``(student_logits, teacher_logits)`` or ``(student_logits, teacher_logits, targets)``, e.g.
            ``DKDLoss``, ``DISTLoss``, ``LogitStandardizedKDLoss``, ``ReverseKDLoss``, ``JSKDLoss``. Its
            ``temperature`` buffer, if any, follows :attr:`temperature`.
        feature_terms: feature/relation loss terms on intermediate layers (see :class:`FeatureTerm`).
        save_teacher: also store the teacher's weights in checkpoints.
        teacher_eval: keep the teacher in eval mode (BN running stats fixed). ``False`` lets ``.train()``
            reach it, for methods that want teacher BN in train mode.
        compile: compile student and teacher in place with ``torch.compile`` in :meth:`configure_model`.

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
        temperature: float | None = None,
        alpha: float = 0.9,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        distill_loss: nn.Module | None = None,
        feature_terms: list[FeatureTerm] | None = None,
        save_teacher: bool = False,
        teacher_eval: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        # Under the CLI hparams are the parsed class_path configs (load_from_checkpoint rebuilds everything
        # from them). From Python they would be pickled modules and callables, which also make the checkpoint
        # unloadable with torch.load(weights_only=True): leave them out and pass them to load_from_checkpoint.
        self.save_hyperparameters(
            ignore=[]
            if built_by_cli()
            else ["teacher", "student", "optimizer", "lr_scheduler", "distill_loss", "feature_terms"]
        )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the KD term), got {alpha}.")
        temperature = _resolve_temperature(temperature, distill_loss)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; typical values are 1 to 8.")
        n_teacher, n_student = infer_num_classes(teacher), infer_num_classes(student)
        if n_teacher is not None and n_student is not None and n_teacher != n_student:
            raise ValueError(
                f"teacher predicts {n_teacher} classes but student predicts {n_student}; "
                "set the same num_classes on both models."
            )
        num_classes = num_classes or n_student or n_teacher
        if num_classes is None:
            raise ValueError("cannot infer the number of classes from the models; pass num_classes=…")
        self.num_classes = num_classes

        if teacher_ckpt is not None:
            load_teacher_weights(teacher, teacher_ckpt)
        teacher.requires_grad_(False)  # before strategy setup: DDP's reducer must never see these params
        self.teacher = teacher.eval() if teacher_eval else teacher
        self.student = student
        self.teacher_eval = teacher_eval
        if teacher_eval:
            # Lightning >= 2.5.5 warns about modules in eval mode at fit start (#21146); a frozen teacher
            # always is. Silence exactly that count, so any other module left in eval mode still warns.
            n = sum(1 for _ in teacher.modules())
            warnings.filterwarnings("ignore", message=rf"Found {n} module\(s\) in eval mode at the start of training")
        self.save_teacher = save_teacher
        self.compile_models = compile  # not ``self.compile``: that is nn.Module's method
        self._compiled = False

        distill_loss = distill_loss if distill_loss is not None else KDLoss(temperature)
        self._kd_takes_targets = "targets" in inspect.signature(distill_loss.forward).parameters
        self.loss_terms = nn.ModuleDict({"ce": nn.CrossEntropyLoss(), "kd": distill_loss})
        self.feature_terms = nn.ModuleList(feature_terms or [])
        names = [t.name for t in self.feature_terms]
        if len(set(names)) != len(names):
            raise ValueError(f"feature term names must be unique, got {names}.")
        self.feature_captures = self._make_captures()
        # device-side copies of the two knobs, for logging: logging a Python float makes Lightning build a
        # tensor on the GPU each step, a blocking host-to-device copy
        self.register_buffer("_knobs", torch.zeros(2), persistent=False)  # (temperature, alpha)
        self.alpha = alpha
        self.temperature = temperature
        self._build_metrics(num_classes)
        self.val_teacher_acc = self.val_acc.clone()
        self.test_teacher_acc = self.test_acc.clone()

    # -- knobs a callback may turn ------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        return self._temperature  # a Python mirror of the buffer: reading it never syncs with the GPU

    @temperature.setter
    def temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"temperature must be > 0, got {value}.")
        self._temperature = float(value)
        self._knobs[0].fill_(value)
        loss = self.loss_terms["kd"]
        own = getattr(loss, "temperature", None)
        if isinstance(own, Tensor):
            own.fill_(value)  # in place: no recompile under torch.compile
        elif isinstance(own, (float, int)):
            loss.temperature = float(value)

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {value}.")
        self._alpha = float(value)
        self._knobs[1].fill_(value)

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of every named term: ``ce`` = 1 − α, ``kd`` = α, then each feature term's ``weight``."""
        weights = {"ce": 1.0 - self._alpha, "kd": self._alpha}
        weights.update({t.name: t.weight for t in self.feature_terms})
        return weights

    # -- the two methods a subclass usually overrides ------------------------------------------------
    def forward_teacher(self, inputs: Any) -> Tensor:
        """Teacher logits for ``inputs``, without gradient, as fp32."""
        with torch.no_grad():
            return self.teacher(inputs).float()

    def teacher_logits(self, batch: Any, inputs: Any) -> Tensor:
        """Teacher logits for a training batch: :meth:`forward_teacher` on its inputs. A cached-teacher
        subclass overrides this to look logits up by sample index instead of running the teacher."""
        return self.forward_teacher(inputs)

    def forward_student(self, inputs: Any) -> Tensor:
        """Student logits for ``inputs``."""
        return self.student(inputs)

    def forward(self, inputs: Any) -> Tensor:
        return self.forward_student(inputs)

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self.teacher_eval:
            self.teacher.eval()
        return self

    def configure_model(self) -> None:
        """With ``compile=True``, compile student and teacher in place (``Module.compile``: state-dict keys get
        no ``_orig_mod.`` prefix). Feature hooks are registered first (LIGHTNING.md #16): Dynamo does not guard
        on module hooks, so a compiled module keeps running the hooks it had when first traced and ignores any
        added later. ``FeatureHooks`` registering them at fit start is then a no-op."""
        if not self.compile_models or self._compiled:
            return  # Lightning calls this hook on every fit/validate/test: compile once
        for capture in self.feature_captures.values():
            capture.register()
        self.student.compile()
        self.teacher.compile()
        self._compiled = True

    # -- loss ---------------------------------------------------------------------------------------
    def compute_losses(
        self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, indices: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Unweighted value of every named term (feature terms read the features hooked in this step)."""
        losses = {
            "ce": self.loss_terms["ce"](student_logits.float(), targets),
            "kd": self.loss_terms["kd"](student_logits, teacher_logits, *([targets] if self._kd_takes_targets else [])),
        }
        for term in self.feature_terms:
            s, t = self.features("student", term.capture), self.features("teacher", term.capture)
            losses[term.name] = term(s, t, indices)
        return losses

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, targets = self.unpack_batch(batch)
        student_logits = self.forward_student(inputs)
        teacher_logits = self.teacher_logits(batch, inputs)
        terms = self.compute_losses(student_logits, teacher_logits, targets, self.batch_indices(batch))
        weights = self.loss_weights
        loss = sum(weights[name] * value for name, value in terms.items())
        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value)
        self.log("train/temperature", self._knobs[0])
        self.log("train/alpha", self._knobs[1])
        return loss

    def _eval_step(self, batch: Any, stage: Literal["val", "test"]) -> None:
        inputs, targets = self.unpack_batch(batch)
        student_logits = self.forward_student(inputs)
        teacher_logits = self.forward_teacher(inputs)
        acc, teacher_acc = (
            (self.val_acc, self.val_teacher_acc) if stage == "val" else (self.test_acc, self.test_teacher_acc)
        )
        acc(student_logits, targets)
        teacher_acc(teacher_logits, targets)
        self.log(f"{stage}/loss", F.cross_entropy(student_logits.float(), targets), sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=True)
        self.log(f"{stage}/teacher_acc", teacher_acc)

    # -- checkpoints without the teacher ------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._save_connector_shapes(checkpoint)
        if not self.save_teacher:
            state = checkpoint["state_dict"]
            # a teacher in train mode (teacher_eval=False) updates its BN statistics: keep those buffers
            keep = {f"teacher.{n}" for n, _ in self.teacher.named_buffers()} if not self.teacher_eval else set()
            for key in [k for k in state if k.startswith("teacher.") and k not in keep]:
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rebuild_connectors(checkpoint)
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():  # the live teacher fills what was left out
            state.setdefault(f"teacher.{key}", value)
