"""An image generator for data-free distillation: DAFL's (Chen et al. 2019, arXiv:1904.01186, §4 and its code's
CIFAR generator), sized for any square image. Pure torch.

    z (latent_dim) → Linear → (4w, s/4, s/4) → BN → ×2 → Conv3×3 → BN → LeakyReLU → ×2 → Conv3×3 (w) → BN →
    LeakyReLU → Conv3×3 (channels) → tanh → BatchNorm without affine

The last BatchNorm (no learnt scale or shift) puts every channel of a batch at mean 0, variance 1: the scale of
normalised training images, which is what a teacher trained on normalised data reads. Sizes not divisible by 4
are reached by interpolating the last feature map.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ImageGenerator(nn.Module):
    """``z (N, latent_dim) → images (N, channels, size, size)``, batch-normalised per channel.

    Args:
        latent_dim: length of the noise vector.
        image_size: side of the square images the teacher reads (e.g. 8 for digits, 28 for Fashion-MNIST).
        channels: image channels.
        width: channels of the last hidden feature map (the first has ``2 · width``).

    Example:
        >>> import torch
        >>> ImageGenerator(32, 28, 1, 16)(torch.randn(4, 32)).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 3, width: int = 64) -> None:
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("image_size", image_size), ("channels", channels),
                            ("width", width)):  # fmt: skip
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ImageGenerator: {name} must be a positive int, got {value!r}.")
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.start = max(1, -(-image_size // 4))
        self.project = nn.Linear(latent_dim, 2 * width * self.start**2)
        self.width = width
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Sequential(nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())
        self.out_norm = nn.BatchNorm2d(channels, affine=False)

    def forward(self, z: Tensor) -> Tensor:
        x = self.project(z).view(z.shape[0], 2 * self.width, self.start, self.start)
        x = self.body(x)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.out_norm(self.head(x))
