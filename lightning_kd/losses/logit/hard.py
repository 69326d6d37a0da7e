"""Hard-label distillation (DeiT, Touvron et al. 2021, arXiv:2012.12877, §3): the student learns the teacher's
decision ``y_t = argmax z_t`` as if it were the label. DeiT's hard objective is
``½ CE(ψ(Z_s), y) + ½ CE(ψ(Z_s), y_t)`` (the distillation token's head for the second term); this is that second
term. Pure torch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hard_distillation_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``CE(student_logits, argmax teacher_logits)``, batch mean, fp32.

    Example:
        >>> import torch
        >>> s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 3.0]])   # the teacher says class 1
        >>> round(float(hard_distillation_loss(s, t)), 4)  # -log(1/2)
        0.6931
    """
    return F.cross_entropy(student_logits.float(), teacher_logits.argmax(-1))
