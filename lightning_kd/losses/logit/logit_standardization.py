"""Logit-standardised KD: Hinton KD on z-scored logits, so the student matches relations, not magnitudes.

Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024, arXiv:2403.01427.

Each sample's logits are standardised over the classes before the temperature softmax:

    Z(z)  = (z - mean(z)) / (std(z) + ε),      std with Bessel's correction (÷ (C - 1)), ε = 1e-7
    L_LS  = T² · KL( softmax(Z(t) / T) ‖ softmax(Z(s) / T) ),  averaged over the batch

which amounts to a per-sample temperature ``T · std(z)`` for each network. The loss is invariant (up to
``ε``) to adding a constant to, or multiplying by a positive constant, either network's logits of a sample. Defaults
follow the authors' code (sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``,
``tools/train.py``): base temperature ``T = 2`` (3 for some teacher/student pairs), with the loss weighted
by 9 next to cross-entropy on CIFAR-100 (apply that weight outside the loss).
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.losses.divergence import check_temperature
from lightning_kd.losses.logit._common import check_logits, check_nonnegative, check_same_logits
from lightning_kd.losses.logit.kd import kd_loss

_EPS = 1e-7


def _standardize(logits: Tensor) -> Tensor:
    """Z-score along the class dim 1 (fp32)."""
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + _EPS)


def logit_standardized_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 2.0
) -> Tensor:
    """Logit-standardised KD loss, ``T² · KL(softmax(Z(t)/T) ‖ softmax(Z(s)/T))`` averaged over samples.

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples), ``C >= 2``.
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        temperature: base temperature ``T > 0`` applied to the z-scores.

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[1.0, 2.0, 3.0]]); t = torch.tensor([[3.0, 2.0, 1.0]])
        >>> round(logit_standardized_kd_loss(s, t, temperature=1.0).item(), 4)
        1.1504
        >>> logit_standardized_kd_loss(10 * s - 4, s).item() < 1e-6  # shift/scale of the logits is ignored
        True
    """
    check_temperature(temperature)
    check_same_logits(student_logits, teacher_logits, "logit_standardized_kd_loss")
    check_logits(student_logits, "logit_standardized_kd_loss", min_classes=2)
    return kd_loss(_standardize(student_logits), _standardize(teacher_logits.detach()), temperature)


class LogitStandardizedKDLoss(nn.Module):
    """Module form of :func:`logit_standardized_kd_loss` times ``weight``; the temperature comes with every call
    (the paper's code uses ``T = 2``: set it on the distillation module).

    The authors weight this loss 9 beside cross-entropy 0.1 (``--kd-weight 9`` on mdistiller's KD config, whose
    CE weight is 0.1): z-scored logits at ``T = 2`` give flat distributions and a small KL, so at a distillation
    module's ``alpha = 0.9`` alone the term is 10x weaker than theirs. ``weight = 10`` with ``alpha = 0.9``
    reproduces their 0.1 : 9.

    Args:
        weight: factor on the loss (``>= 0``; 1 = the loss as defined above).

    Example:
        >>> LogitStandardizedKDLoss(weight=10.0)(torch.randn(8, 10), torch.randn(8, 10), temperature=2.0).shape
        torch.Size([])
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        check_nonnegative("weight", weight, "the factor on the logit-standardised KD loss", 10.0)
        self.weight = float(weight)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 2.0) -> Tensor:
        return logit_standardized_kd_loss(student_logits, teacher_logits, temperature) * self.weight
