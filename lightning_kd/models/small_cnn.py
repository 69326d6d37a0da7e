"""The small CNN student of the reference experiment (BENCHMARKS.md): 24,058 parameters on 1×28×28."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """``[conv3×3 + BN + ReLU] × 3`` (2×2 max-pool after the first two), global average pool, linear.

    Submodules ``block1``..``block3`` are the natural hook points for feature distillation.

    Args:
        in_channels: input channels (1 for Fashion-MNIST / digits, 3 for CIFAR).
        num_classes: output logits.
        widths: channels of the three conv blocks.

    Example:
        >>> SmallCNN(1, 10)(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"SmallCNN takes exactly 3 widths, got {list(widths)}.")
        self.num_classes = num_classes
        self.block1 = _conv_bn_relu(in_channels, widths[0])
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = _conv_bn_relu(widths[0], widths[1])
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = _conv_bn_relu(widths[1], widths[2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.block1(x))  # (N, w0, H/2, W/2)
        x = self.pool2(self.block2(x))  # (N, w1, H/4, W/4)
        x = self.block3(x)  # (N, w2, H/4, W/4)
        return self.fc(self.pool(x).flatten(1))
