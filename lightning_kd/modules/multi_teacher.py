"""MultiTeacherDistillation: several frozen teachers, one student, the teachers combined by a weighting rule."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_kd.base import BaseModule, built_by_cli, infer_num_classes
from lightning_kd.checkpoint import load_teacher_weights


def confidence_weights(teacher_logits: Tensor, targets: Tensor) -> Tensor:
    """CA-MKD per-sample teacher weights (Zhang, Chen & Wang, 2022, arXiv:2201.00007; official code
    Rorozhl/CA-MKD): ``w_k = (1 − softmax_k(CE_k)) / (K − 1)``, ``CE_k = CE(t_k, y)``: teachers closer to the label
    weigh more. ``(K, N, C)``, ``(N,)`` → ``(K, N)``; columns sum to 1; ones if K = 1; ``softmax_k(−CE_k)`` if K = 2.
    """
    k = teacher_logits.shape[0]
    if k == 1:
        return teacher_logits.new_ones(teacher_logits.shape[:2], dtype=torch.float32)
    ce = torch.stack([F.cross_entropy(t.float(), targets, reduction="none") for t in teacher_logits])  # (K, N)
    return (1.0 - ce.softmax(0)) / (k - 1)


def ensemble_kd_loss(student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """``T² · KL(Σ_k w_k softmax(t_k/T) ‖ softmax(s/T))``, batch mean: KD from the teachers' weighted average
    distribution (exactly ``kd_loss`` for one teacher). Shapes: ``(N, C)``, ``(K, N, C)``, ``weights (K,)``, sum 1.
    """
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (K, N, C)
    log_mix = torch.logsumexp(weights.float().log()[:, None, None] + log_p_t, dim=0)  # (N, C) log Σ_k w_k p_k
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_mix, reduction="batchmean", log_target=True) * temperature**2


def per_teacher_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · KL(softmax(t_k/T) ‖ softmax(s/T))`` per teacher and sample, ``(K, N)``; row means are ``kd_loss``."""
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (K, N, C)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1).expand_as(log_p_t)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1) * temperature**2


class MultiTeacherDistillation(BaseModule):
    """Distil several frozen ``teachers`` into one ``student``: ``loss = (1 − α) · CE + α · KD``, where KD is

    - ``equal`` / ``weighted``: Hinton KD (arXiv:1503.02531) from the teachers' softened distributions averaged
      with weights ``1/K`` or ``teacher_weights`` normalised to sum 1 (:func:`ensemble_kd_loss`);
    - ``confidence``: CA-MKD (arXiv:2201.00007), ``mean_n Σ_k w_kn · KD_kn``, ``w`` from :func:`confidence_weights`;
    - ``per_teacher``: ``Σ_k w_k · KD_k``, ``teacher_weights`` as given, each ``KD_k`` logged as ``train/loss_kd_<k>``.

    Teachers are frozen as in :class:`~lightning_kd.DistillationModule` (``requires_grad`` off, eval mode, no_grad,
    fp32 logits, not in the optimizer, out of checkpoints unless ``save_teacher``). Logs ``val/teacher_acc_<k>``.

    Args:
        teachers: the trained networks (YAML: a list of ``class_path``/``init_args``).
        student: the network to train.
        teacher_ckpts: one weights file (or ``None``) per teacher, read like DistillationModule's ``teacher_ckpt``.
        temperature: softening temperature ``T > 0`` (a TemperatureScheduler may change it).
        alpha: weight of the KD term in ``[0, 1]``; CE gets ``1 − α``.
        weighting: ``equal``, ``weighted``, ``confidence`` or ``per_teacher`` (see above).
        teacher_weights: one weight ``>= 0`` per teacher; for ``weighted`` and ``per_teacher`` only.
        num_classes: classes; inferred from the models when ``None``.
        optimizer, lr_scheduler, scheduler_interval: as in DistillationModule (student parameters only).
        save_teacher: also store the teachers' weights in checkpoints.

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
        temperature: float = 4.0,
        alpha: float = 0.9,
        weighting: Literal["equal", "weighted", "confidence", "per_teacher"] = "equal",
        teacher_weights: list[float] | None = None,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        save_teacher: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        # See DistillationModule: from Python, modules and callables stay out of the (weights-only) checkpoint.
        self.save_hyperparameters(ignore=[] if built_by_cli() else ["teachers", "student", "optimizer", "lr_scheduler"])
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the KD term), got {alpha}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; typical values are 1 to 8.")
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
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"teacher_weights must be >= 0 and not all 0, got {teacher_weights}.")
        # (K,): 1/K for equal and confidence, normalised for weighted, as given for per_teacher
        self.register_buffer("teacher_weights", w / w.sum() if weighting == "weighted" else w, persistent=False)
        n_student, n_teachers = infer_num_classes(student), [infer_num_classes(t) for t in teachers]
        for i, n in enumerate(n_teachers):
            if None not in (n, n_student) and n != n_student:
                raise ValueError(f"teacher {i} predicts {n} classes, student {n_student}; use one num_classes for all.")
        num_classes = num_classes or n_student or next((n for n in n_teachers if n is not None), None)
        if num_classes is None:
            raise ValueError("cannot infer the number of classes from the models; pass num_classes=…")
        self.num_classes, self.weighting, self.temperature, self.alpha = num_classes, weighting, temperature, alpha
        for teacher, ckpt in zip(teachers, teacher_ckpts or [None] * k):
            if ckpt is not None:
                load_teacher_weights(teacher, ckpt)
            teacher.requires_grad_(False)  # before strategy setup: DDP's reducer must never see these params
        self.teachers = nn.ModuleList(teachers).eval()
        self.student, self.save_teacher = student, save_teacher
        # Lightning >= 2.5.5 warns about modules in eval mode at fit start (#21146): silence exactly that count.
        n = sum(1 for _ in self.teachers.modules())
        warnings.filterwarnings("ignore", message=rf"Found {n} module\(s\) in eval mode at the start of training")
        self._build_metrics(num_classes)
        self.val_teacher_acc = nn.ModuleList(self.val_acc.clone() for _ in teachers)
        self.test_teacher_acc = nn.ModuleList(self.test_acc.clone() for _ in teachers)

    def forward_teachers(self, inputs: Any) -> Tensor:
        """Every teacher's logits for ``inputs``, stacked ``(K, N, C)``, without gradient, as fp32."""
        with torch.no_grad():
            return torch.stack([teacher(inputs).float() for teacher in self.teachers])

    def forward(self, inputs: Any) -> Tensor:
        return self.student(inputs)

    def train(self, mode: bool = True) -> MultiTeacherDistillation:
        super().train(mode)
        self.teachers.eval()
        return self

    def compute_kd(self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The KD term ``kd`` and what else to log: ``kd_<k>`` (per_teacher) or ``teacher_weight_<k>``."""
        t = self.temperature
        if self.weighting in ("equal", "weighted"):
            return {"kd": ensemble_kd_loss(student_logits, teacher_logits, self.teacher_weights, t)}
        kd = per_teacher_kd(student_logits, teacher_logits, t)  # (K, N)
        if self.weighting == "confidence":
            w = confidence_weights(teacher_logits, targets)  # (K, N)
            return {"kd": (w * kd).sum(0).mean(), **{f"teacher_weight_{i}": wi.mean() for i, wi in enumerate(w)}}
        terms = kd.mean(1)  # (K,)
        return {"kd": (self.teacher_weights * terms).sum(), **{f"kd_{i}": term for i, term in enumerate(terms)}}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, targets = self.unpack_batch(batch)
        student_logits = self.student(inputs)
        terms = {"ce": F.cross_entropy(student_logits.float(), targets)}
        terms.update(self.compute_kd(student_logits, self.forward_teachers(inputs), targets))
        loss = (1.0 - self.alpha) * terms["ce"] + self.alpha * terms["kd"]
        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/{name}" if name.startswith("teacher_weight") else f"train/loss_{name}", value)
        if self._trainer is None or batch_idx % self._trainer.log_every_n_steps == 0:
            # a Python float becomes a tensor on the device when logged: a blocking copy, so not every step
            self.log("train/temperature", self.temperature)
        return loss

    def _eval_step(self, batch: Any, stage: Literal["val", "test"]) -> None:
        inputs, targets = self.unpack_batch(batch)
        logits = self.student(inputs).float()
        acc, teacher_accs = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_teacher_acc")
        acc(logits, targets)
        self.log(f"{stage}/loss", F.cross_entropy(logits, targets), sync_dist=True)
        self.log(f"{stage}/acc", acc, prog_bar=True)
        for i, (teacher_logits, teacher_acc) in enumerate(zip(self.forward_teachers(inputs), teacher_accs)):
            teacher_acc(teacher_logits, targets)
            self.log(f"{stage}/teacher_acc_{i}", teacher_acc)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.save_teacher:  # LIGHTNING.md #6: teacher weights out here, back in on_load_checkpoint
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teachers.")
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if not any(k.startswith("teachers.") for k in state):
            state.update({f"teachers.{k}": v for k, v in self.teachers.state_dict().items()})
