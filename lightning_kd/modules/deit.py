"""DeiT distillation (Touvron et al. 2021, "Training data-efficient image transformers & distillation through
attention", arXiv:2012.12877): a transformer student with a distillation token learns the labels through its class
token and the teacher through its distillation token (§4); a CNN teacher is the paper's best pairing.

    hard (DeiT's default):  L = ½ · CE(ψ(Z_cls), y) + ½ · CE(ψ(Z_dist), argmax Z_t)
    soft:                   L = (1 − λ) · CE(ψ(Z_cls), y) + λ · τ² · KL(ψ(Z_t/τ) ‖ ψ(Z_dist/τ)),  λ = 0.1, τ = 3

(the DistillationModule's ``ce`` and ``kd`` terms with ``alpha`` = ½ or λ and ``temperature`` = τ). At inference
the student's two heads are averaged (:class:`~lightning_kd.models.ViT` and timm's distilled DeiT models do it in
eval mode), so validation, test, predict and the exported model all read one tensor. A student without a
distillation token (one output) takes both terms on its one head: DeiT's "usual distillation".
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from lightning_kd.core.batch import Batch
from lightning_kd.core.model_info import run_model
from lightning_kd.core.teacher import TeacherOutput, output_logits
from lightning_kd.losses.logit.hard import hard_distillation_loss
from lightning_kd.modules.distillation import DistillationModule


class DeiTDistillation(DistillationModule):
    """Distil a (CNN) teacher into a transformer student through its distillation token.

    Args:
        teacher: the trained network (or a teacher component).
        student: a model returning ``(class_logits, distillation_logits)`` in training and one tensor in eval
            (:class:`~lightning_kd.models.ViT` with ``distilled: true``; timm's ``deit_*_distilled_*`` models,
            switched to that mode here with ``set_distilled_training(True)``), or any one-output classifier.
        distillation: ``hard`` (the teacher's argmax as a label; DeiT's default) or ``soft`` (KL at ``T``).
        **kwargs: :class:`DistillationModule`'s other arguments; ``alpha`` defaults to ½ (hard) or 0.1 (soft) and
            ``temperature`` to 3 (soft; unused by hard), DeiT's values.

    Example:
        >>> from lightning_kd.models import SmallCNN, ViT
        >>> m = DeiTDistillation(SmallCNN(1, 10, [8, 16, 32]), ViT(28, 7, 1, 10, 32, 2, 2, distilled=True))
        >>> m.distillation, m.loss_weights
        ('hard', {'ce': 0.5, 'kd': 0.5})
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        distillation: Literal["hard", "soft"] = "hard",
        **kwargs: Any,
    ) -> None:
        if distillation not in ("hard", "soft"):
            raise ValueError(
                f"distillation must be 'hard' (the teacher's argmax, DeiT's default) or 'soft' (KL at the "
                f"temperature), got {distillation!r}; for no distillation train the ViT with ClassificationModule."
            )
        kwargs.setdefault("alpha", 0.5 if distillation == "hard" else 0.1)
        kwargs.setdefault("temperature", 3.0)
        super().__init__(teacher=teacher, student=student, **kwargs)
        self.distillation = distillation
        if callable(getattr(student, "set_distilled_training", None)):
            student.set_distilled_training(True)  # timm: return both heads in training mode

    def forward_student(self, inputs: Any) -> Tensor | tuple[Tensor, Tensor]:
        """``(class_logits, distillation_logits)`` from a distilled student in training; one tensor otherwise."""
        out = run_model(self.student, inputs, "student")
        if isinstance(out, tuple) and len(out) == 2 and all(isinstance(o, Tensor) for o in out):
            return out
        return output_logits(out, "student")

    def forward(self, inputs: Any) -> Tensor:
        out = self.forward_student(inputs)
        return (out[0] + out[1]) / 2 if isinstance(out, tuple) else out

    def compute_losses(self, student_logits: Any, teacher: TeacherOutput, batch: Batch) -> dict[str, Tensor]:
        """``ce`` on the class head, ``kd`` (hard or soft) on the distillation head, then feature terms."""
        cls, dist = student_logits if isinstance(student_logits, tuple) else (student_logits, student_logits)
        if self.distillation == "hard":
            kd = hard_distillation_loss(dist, teacher.logits)
        else:
            kd = self.kd_term(dist, teacher.logits, batch.targets)
        terms = {"ce": nn.functional.cross_entropy(cls.float(), batch.targets), "kd": kd}
        if len(self.feature_terms):
            terms.update(self.feature_terms.compute(self._host_index(batch)))
        return terms
