"""Hinton knowledge distillation: a divergence between temperature-softened distributions.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531.

    L_KD = T² · KL( softmax(t / T) ‖ softmax(s / T) ),  averaged over the batch

The T² factor keeps the gradient magnitude of the soft term roughly independent of T (paper, §2), so a
loss weight tuned at one temperature stays sensible at another. Any divergence of the core
(:mod:`lightning_kd.losses.divergence`: reverse KL, JSD, skew KL, TV) can replace the KL.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_kd.losses.divergence import Divergence, as_divergence, check_temperature
from lightning_kd.losses.logit._common import as_rows, check_same_logits


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor = 4.0,
    divergence: Divergence | str = "forward_kl",
) -> Tensor:
    """Hinton KD loss, ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over samples (or another ``divergence``).

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples).
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        temperature: softening temperature ``T > 0`` (a float or a 0-d tensor).
        divergence: a :class:`~lightning_kd.losses.divergence.Divergence` or its kind (``forward_kl``: Hinton).

    Returns:
        0-d tensor (fp32).

    Example:
        >>> s = torch.tensor([[1.0, 2.0, 3.0]]); t = torch.tensor([[3.0, 2.0, 1.0]])
        >>> round(kd_loss(s, t, temperature=1.0).item(), 4)
        1.1504
    """
    return divergence_kd_loss(student_logits, teacher_logits, temperature, divergence, "kd_loss")


def divergence_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor,
    divergence: Divergence | str,
    what: str,
) -> Tensor:
    """:func:`kd_loss`'s body; ``what`` names the public function in error messages."""
    check_temperature(temperature)
    check_same_logits(student_logits, teacher_logits, what)
    return as_divergence(divergence).rows(as_rows(student_logits), as_rows(teacher_logits), temperature).mean()


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss`: the divergence is its setting, the temperature comes with every call.

    A distillation module owns ``T`` (``temperature`` in a recipe, moved by a
    :class:`~lightning_kd.callbacks.TemperatureScheduler`) and passes it to ``forward``; nothing here keeps a copy.

    Args:
        divergence: which divergence (default: forward KL, Hinton's), e.g. ``{kind: tv}`` in YAML.

    Example:
        >>> KDLoss()(torch.randn(8, 10), torch.randn(8, 10), temperature=4.0).shape
        torch.Size([])
        >>> KDLoss(Divergence("jsd", beta=0.5))(torch.zeros(1, 2), torch.zeros(1, 2), temperature=2.0)
        tensor(0.)
    """

    def __init__(self, divergence: Divergence = Divergence()) -> None:  # noqa: B008 - frozen dataclass: immutable
        super().__init__()
        self.divergence = as_divergence(divergence)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
        return kd_loss(student_logits, teacher_logits, temperature, self.divergence)

    def extra_repr(self) -> str:
        return repr(self.divergence)
