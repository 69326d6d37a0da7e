"""CIFAR-style ResNets (He et al., 2016, arXiv:1512.03385, §4.2) as used by the KD literature.

Depth ``6n + 2`` with ``n`` basic blocks per stage; projection shortcuts (1×1 conv + BN) where the shape
changes, as in CRD/RepDistiller (Tian et al., 2020, arXiv:1910.10699), so the ``x4`` variants have the
parameter counts papers report (resnet32x4 ≈ 7.43 M, resnet8x4 ≈ 1.23 M on CIFAR-100).

``ResNet(depth=14, widths=(64, 64, 128, 256), in_channels=1)`` is the Fashion-MNIST teacher of
BENCHMARKS.md (2,776,522 parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN, identity or projection shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: stem conv3×3, three stages (strides 1/2/2), global average pool, linear.

    Stages are ``layer1``..``layer3``; hook them by name for feature distillation.

    Args:
        depth: ``6n + 2`` (8, 14, 20, 32, 44, 56, 110).
        widths: ``(stem, stage1, stage2, stage3)`` channels.
        in_channels: input channels.
        num_classes: output logits.

    Example:
        >>> ResNet(8, num_classes=10)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 20,
        widths: Sequence[int] = (16, 16, 32, 64),
        in_channels: int = 3,
        num_classes: int = 100,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110), got {depth}.")
        if len(widths) != 4:
            raise ValueError(f"widths must be (stem, stage1, stage2, stage3), got {list(widths)}.")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], widths[1], n, stride=1)
        self.layer2 = self._stage(widths[1], widths[2], n, stride=2)
        self.layer3 = self._stage(widths[2], widths[3], n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, w0, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, w3, H/4, W/4)
        return self.fc(self.pool(x).flatten(1))


def _builder(depth: int, widths: Sequence[int]):
    def build(num_classes: int = 100, in_channels: int = 3) -> ResNet:
        return ResNet(depth, widths, in_channels=in_channels, num_classes=num_classes)

    build.__name__ = f"resnet{depth}" + ("x4" if widths[1] == 64 and widths[0] == 32 else "")
    build.__doc__ = f"CIFAR ResNet-{depth}, widths {tuple(widths)}."
    return build


resnet8 = _builder(8, (16, 16, 32, 64))
resnet14 = _builder(14, (16, 16, 32, 64))
resnet20 = _builder(20, (16, 16, 32, 64))
resnet32 = _builder(32, (16, 16, 32, 64))
resnet44 = _builder(44, (16, 16, 32, 64))
resnet56 = _builder(56, (16, 16, 32, 64))
resnet110 = _builder(110, (16, 16, 32, 64))
resnet8x4 = _builder(8, (32, 64, 128, 256))
resnet32x4 = _builder(32, (32, 64, 128, 256))
