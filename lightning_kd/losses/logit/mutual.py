"""Deep Mutual Learning losses: every student learns from the labels and from its peers.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018, arXiv:1706.00384 (§"Extension to larger
student cohorts")::

    L_i = CE(z_i, y) + kl_weight · T² · 1/(S − 1) · Σ_{j≠i} KL(softmax(z_j/T).detach() ‖ softmax(z_i/T))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.divergence import kl_rows


def dml_losses(logits: Sequence[Tensor], targets: Tensor, temperature: float = 1.0, kl_weight: float = 1.0) -> Tensor:
    """Per-student Deep Mutual Learning losses.

    The paper uses ``T = 1`` and ``kl_weight = 1``; ``T²`` keeps the KL gradient scale independent of ``T``
    (as in Hinton KD). Peers are detached, so ``L_i`` only trains student ``i`` and ``Σ_i L_i`` can be
    minimised by one optimizer: the gradient of the sum for student ``i`` is that of ``L_i``.

    Args:
        logits: ``S >= 2`` tensors ``(N, C)``, one per student.
        targets: ``(N,)`` class indices.
        temperature: softening temperature ``T > 0`` of the KL terms.
        kl_weight: weight of the mimicry (KL) term.

    Returns:
        ``(S,)``: ``L_i`` for every student.

    Example:
        >>> z = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
        >>> dml_losses(z, torch.tensor([0])).shape
        torch.Size([2])
    """
    if len(logits) < 2:
        raise ValueError(f"mutual learning needs at least 2 students' logits, got {len(logits)}.")
    log_p = [F.log_softmax(z.float() / temperature, dim=-1) for z in logits]  # S × (N, C)
    losses = []
    for i, (z, log_p_i) in enumerate(zip(logits, log_p)):
        kl = sum(kl_rows(log_p_j.detach(), log_p_i).mean() for j, log_p_j in enumerate(log_p) if j != i)
        losses.append(F.cross_entropy(z.float(), targets) + kl_weight * temperature**2 * kl / (len(logits) - 1))
    return torch.stack(losses)
