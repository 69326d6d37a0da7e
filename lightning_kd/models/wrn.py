"""Wide residual networks (Zagoruyko & Komodakis, 2016, arXiv:1605.07146) for CIFAR-sized inputs.

Pre-activation basic blocks, depth ``6n + 4``, widths ``16, 16k, 32k, 64k``. ``wrn_40_2`` (≈2.26 M params
on CIFAR-100) and ``wrn_16_2`` (≈0.70 M) are the standard CRD teacher/student pair.
"""

from __future__ import annotations

from torch import Tensor, nn


class WideBlock(nn.Module):
    """BN-ReLU-conv3×3 twice; the shortcut is a 1×1 conv on the pre-activated input when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k; stages ``block1``..``block3``, final ``bn``/``relu`` before pooling.

    Args:
        depth: ``6n + 4`` (16, 22, 28, 40).
        widen_factor: ``k``.
        in_channels: input channels.
        num_classes: output logits.
        dropout: dropout between the two convs of a block.

    Example:
        >>> WideResNet(16, 2, num_classes=10)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 2,
        in_channels: int = 3,
        num_classes: int = 100,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 (16, 22, 28, 40), got {depth}.")
        n = (depth - 4) // 6
        w = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, padding=1, bias=False)
        self.block1 = self._stage(w[0], w[1], n, 1, dropout)
        self.block2 = self._stage(w[1], w[2], n, 2, dropout)
        self.block3 = self._stage(w[2], w[3], n, 2, dropout)
        self.bn = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, n: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            *[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout) for i in range(n)]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))  # (N, 64k, H/4, W/4)
        return self.fc(self.pool(self.relu(self.bn(x))).flatten(1))


def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-16-2 (CRD student)."""
    return WideResNet(16, 2, in_channels=in_channels, num_classes=num_classes)


def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-40-2 (CRD teacher)."""
    return WideResNet(40, 2, in_channels=in_channels, num_classes=num_classes)
