"""The default discriminator of adversarial KD: a small MLP on the model's output vector. Pure torch."""

from __future__ import annotations

from torch import nn


def mlp_discriminator(num_classes: int, hidden: int = 64) -> nn.Module:
    """``Linear(C, h) → LeakyReLU(0.2) → Linear(h, h) → LeakyReLU(0.2) → Linear(h, 1)``.

    Args:
        num_classes: size ``C`` of the output vectors it judges.
        hidden: width ``h`` of the hidden layers.

    Example:
        >>> mlp_discriminator(10)(torch.randn(4, 10)).shape
        torch.Size([4, 1])
    """
    return nn.Sequential(
        nn.Linear(num_classes, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )
