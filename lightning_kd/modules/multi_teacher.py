"""MultiTeacherDistillation: several frozen teachers, one student, the teachers combined by a weighting rule."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.model_info import infer_num_classes
from lightning_kd.core.teacher import Teacher, TeacherEnsemble
from lightning_kd.losses import confidence_weights, ensemble_kd_loss, per_teacher_kd
from lightning_kd.modules.distillation import DistillationModule

Weighting = Literal["equal", "weighted", "confidence", "per_teacher"]


class MultiTeacherDistillation(DistillationModule):
    """Distil several frozen ``teachers`` into one ``student``: ``loss = (1 − α) · CE + α · KD (+ feature terms)``,
    where KD is

    - ``equal`` / ``weighted``: Hinton KD (arXiv:1503.02531) from the teachers' softened distributions averaged
      with weights ``1/K`` or ``teacher_weights`` normalised to sum 1 (:func:`~lightning_kd.losses.ensemble_kd_loss`);
    - ``confidence``: CA-MKD (arXiv:2201.00007), ``mean_n Σ_k w_kn · KD_kn``, ``w`` from
      :func:`~lightning_kd.losses.confidence_weights` (logged as ``train/teacher_weight_<k>``);
    - ``per_teacher``: ``Σ_k w_k · KD_k``, ``teacher_weights`` as given, each ``KD_k`` logged as ``train/loss_kd_<k>``.

    The teachers form one :class:`~lightning_kd.core.teacher.TeacherEnsemble` component (``self.teacher``), each
    member a :class:`~lightning_kd.Teacher`: frozen, eval mode, no_grad, fp32, out of the optimizer and out of
    checkpoints unless ``save_teacher``. Feature terms work as in :class:`DistillationModule`; a term's
    ``teacher`` index says whose layers it names. Logs ``val/teacher_acc_<k>``.

    Args:
        teachers: the trained networks (YAML: a list of ``class_path``/``init_args``).
        student: the network to train.
        teacher_ckpts: one weights file (or ``None``) per teacher, read like DistillationModule's ``teacher_ckpt``.
        weighting: ``equal``, ``weighted``, ``confidence`` or ``per_teacher`` (see above).
        teacher_weights: one weight ``>= 0`` per teacher; for ``weighted`` and ``per_teacher`` only.
        save_teacher: also store the teachers' weights in checkpoints.
        **kwargs: :class:`DistillationModule`'s other arguments (``temperature``, ``alpha``, ``num_classes``,
            ``optimizer``, ``lr_scheduler``, ``scheduler_interval``, ``feature_terms``, ``compile``), passed
            through by name; a misspelt one fails there.

    Example:
        >>> from lightning_kd.models import MLP
        >>> len(MultiTeacherDistillation([MLP(64, 10), MLP(64, 10)], MLP(64, 10, [16])).teachers)
        2
    """

    def __init__(
        self,
        teachers: list[nn.Module],
        student: nn.Module,
        teacher_ckpts: list[str | None] | None = None,
        weighting: Weighting = "equal",
        teacher_weights: list[float] | None = None,
        save_teacher: bool = False,
        **kwargs: Any,
    ) -> None:
        # the CLI passes the parent's defaults along (None / True): only a value that would matter is refused
        defaults = {"teacher_ckpt": None, "distill_loss": None}
        for name in ("teacher", *defaults):
            if name in kwargs and (name == "teacher" or kwargs[name] != defaults[name]):
                raise ValueError(
                    f"MultiTeacherDistillation takes no {name!r}: give `teachers` (and `teacher_ckpts`); its KD term "
                    "is set by `weighting`."
                )
        if weighting not in ("equal", "weighted", "confidence", "per_teacher"):
            raise ValueError(f"weighting must be equal, weighted, confidence or per_teacher; got {weighting!r}.")
        k = len(teachers)
        if k == 0 or (teacher_ckpts is not None and len(teacher_ckpts) != k):
            raise ValueError(f"need >= 1 teachers and one teacher_ckpts entry each, got {k} and {teacher_ckpts}.")
        needed = weighting in ("weighted", "per_teacher")
        if (teacher_weights is not None) != needed or (needed and len(teacher_weights) != k):
            wanted = f"one teacher_weights entry per teacher ({k})" if needed else "no teacher_weights (drop them)"
            raise ValueError(f"weighting={weighting!r} takes {wanted}, got teacher_weights={teacher_weights}.")
        w = torch.tensor([float(x) for x in teacher_weights]) if needed else torch.full((k,), 1.0 / k)
        if not bool(torch.isfinite(w).all()) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"teacher_weights must be finite, >= 0 and not all 0, got {teacher_weights}.")
        n_student = infer_num_classes(student)
        for i, n in enumerate(infer_num_classes(t) for t in teachers):
            if None not in (n, n_student) and n != n_student:
                raise ValueError(f"teacher {i} predicts {n} classes, student {n_student}; use one num_classes for all.")
        ckpts = teacher_ckpts or [None] * k
        ensemble = TeacherEnsemble([Teacher(t, ckpt=c, save_weights=save_teacher) for t, c in zip(teachers, ckpts)])
        kwargs = {k: v for k, v in kwargs.items() if k not in defaults}
        super().__init__(teacher=ensemble, student=student, **kwargs)
        self.weighting = weighting
        # (K,): 1/K for equal and confidence, normalised for weighted, as given for per_teacher
        self.register_buffer("teacher_weights", w / w.sum() if weighting == "weighted" else w, persistent=False)
        self.val_teacher_acc = nn.ModuleList(self.val_acc.clone() for _ in teachers)
        self.test_teacher_acc = nn.ModuleList(self.test_acc.clone() for _ in teachers)

    @property
    def teachers(self) -> nn.ModuleList:
        """The teacher networks, in order (a view: they are registered under ``teacher.members``)."""
        view = nn.ModuleList(self.teacher.networks)
        view.training = any(n.training for n in self.teacher.networks)
        return view

    def compute_kd(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        """The KD term for stacked teacher logits ``(K, N, C)``; per-teacher details are recorded for the log."""
        t = self.temperature
        if self.weighting in ("equal", "weighted"):
            return ensemble_kd_loss(student_logits, teacher_logits, self.teacher_weights, t)
        kd = per_teacher_kd(student_logits, teacher_logits, t)  # (K, N)
        if self.weighting == "confidence":
            w = confidence_weights(teacher_logits, targets)  # (K, N)
            for i, wi in enumerate(w):
                self.record(f"teacher_weight_{i}", wi.mean())
            return (w * kd).sum(0).mean()
        terms = kd.mean(1)  # (K,)
        for i, term in enumerate(terms):
            self.record(f"loss_kd_{i}", term)
        return (self.teacher_weights * terms).sum()

    def kd_term(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        return self.compute_kd(student_logits, teacher_logits, targets)

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        logits = self.forward_student(batch.inputs).float()
        acc, teacher_accs = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_teacher_acc")
        acc(logits, batch.targets)
        self.log(f"{stage}/loss", torch.nn.functional.cross_entropy(logits, batch.targets), sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=True)
        teacher = self.forward_teacher(batch, training=False)
        for i, (teacher_logits, teacher_acc) in enumerate(zip(teacher.logits, teacher_accs)):
            teacher_acc(teacher_logits, batch.targets)
            self.log(f"{stage}/teacher_acc_{i}", teacher_acc)
