"""Multi-layer perceptron for flat or image inputs (flattened)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """``Flatten → [Linear → ReLU] × len(hidden) → Linear``.

    Args:
        in_features: size of one flattened input (e.g. 64 for 8×8 digits).
        num_classes: output logits.
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden activation.

    Example:
        >>> MLP(64, 10, hidden=[32])(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (128,), dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))
