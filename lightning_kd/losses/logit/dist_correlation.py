"""DIST: match the inter-class and intra-class correlations of the predictions, not their values.

Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", 2022, arXiv:2205.10536.

With ``P = softmax(Z / T)`` row-wise (``(N, C)``, one row per sample) and the Pearson correlation
``ρ(u, v) = ⟨u - ū, v - v̄⟩ / (‖u - ū‖ · ‖v - v̄‖ + ε)``, ``ε = 1e-8``:

    L_inter = 1 - mean_i ρ(P^s[i, :], P^t[i, :])      (each sample's distribution over the classes)
    L_intra = 1 - mean_j ρ(P^s[:, j], P^t[:, j])      (each class's probabilities across the batch)
    L_DIST  = T² · (β · L_inter + γ · L_intra)

Pearson correlation is invariant to a positive affine map of either argument, so the student only has to
preserve the teacher's relations, not its exact probabilities (paper, §3). Defaults follow the authors'
code: ``β = γ = 1``, ``T = 1`` (hunto/image_classification_sota, ``lib/models/losses/dist_kd.py``, which has
no temperature; later releases such as mmrazor's ``DISTLoss`` add ``tau`` with the ``T²`` factor used here,
a no-op at ``T = 1``). The intra-class term needs a batch of at least 2 samples: with one sample it is the
constant 1 (no gradient), as in the authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_kd.losses._shapes import autocast_off
from lightning_kd.losses.divergence import check_temperature
from lightning_kd.losses.logit._common import as_rows, check_nonnegative, check_same_logits

_EPS = 1e-8


def _check_weights(beta: float | Tensor, gamma: float | Tensor) -> None:
    check_nonnegative("beta", beta, "the weight of the inter-class relation", 1.0)
    check_nonnegative("gamma", gamma, "the weight of the intra-class relation", 1.0)


def _pearson(a: Tensor, b: Tensor, dim: int) -> Tensor:
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + _EPS)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float | Tensor = 1.0,
    gamma: float | Tensor = 1.0,
    temperature: float | Tensor = 1.0,
) -> Tensor:
    """DIST loss, ``T² · (β · L_inter + γ · L_intra)`` on temperature-softened probabilities.

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples, so the
            intra-class relation of a segmentation map runs over all its pixels).
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        beta: weight ``β >= 0`` of the inter-class relation.
        gamma: weight ``γ >= 0`` of the intra-class relation.
        temperature: softening temperature ``T > 0``.

    Returns:
        0-d tensor (fp32), in ``[0, 2 · T² · (β + γ)]``.

    Example:
        >>> s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]); t = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
        >>> round(dist_loss(s, t).item(), 4)
        3.6835
        >>> dist_loss(t + 5.0, t).item() < 1e-6  # softmax ignores a per-sample shift
        True
    """
    _check_weights(beta, gamma)
    check_temperature(temperature)
    check_same_logits(student_logits, teacher_logits, "dist_loss")
    with autocast_off(student_logits):
        p_s = torch.softmax(as_rows(student_logits) / temperature, dim=1)
        p_t = torch.softmax(as_rows(teacher_logits.detach()) / temperature, dim=1)
        inter = 1 - _pearson(p_s, p_t, dim=1).mean()
        intra = 1 - _pearson(p_s, p_t, dim=0).mean()
        return temperature**2 * (beta * inter + gamma * intra)


class DISTLoss(nn.Module):
    """Module form of :func:`dist_loss`; ``beta``/``gamma`` are attributes, the temperature comes with every call
    (the distillation module's ``T``; DIST's own default is 1).

    Example:
        >>> DISTLoss()(torch.randn(8, 10), torch.randn(8, 10), temperature=1.0).shape
        torch.Size([])
    """

    def __init__(self, beta: float = 1.0, gamma: float = 1.0) -> None:
        super().__init__()
        _check_weights(beta, gamma)
        self.beta = beta
        self.gamma = gamma

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
        return dist_loss(student_logits, teacher_logits, self.beta, self.gamma, temperature)
