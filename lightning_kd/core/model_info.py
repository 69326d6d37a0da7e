"""What can be read off a model without running it. Pure torch."""

from __future__ import annotations

from torch import nn


def infer_num_classes(model: nn.Module) -> int | None:
    """``model.num_classes`` if set, else the ``out_features`` of its last ``nn.Linear``, else ``None``.

    Example:
        >>> from lightning_kd.models import MLP
        >>> infer_num_classes(MLP(64, 7, hidden=(16,)))
        7
    """
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())
