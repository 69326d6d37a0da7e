"""A small Vision Transformer, optionally with DeiT's distillation token. Pure torch.

Dosovitskiy et al. 2021 (arXiv:2010.11929) for the ViT; Touvron et al. 2021 (arXiv:2012.12877, §4) for the
distillation token: a second learnt token beside the class token, read by its own head and trained on the
teacher's output, while the class token's head is trained on the labels. In training a distilled ViT returns
``(class_logits, distillation_logits)``; in eval mode it returns their mean — the logits timm's
``VisionTransformerDistilled`` gives at inference (DeiT §4 adds the two heads' softmax outputs) — so an exported
or served student is one tensor out, both heads included.

Pre-norm blocks (LayerNorm → multi-head self-attention → residual, LayerNorm → MLP (GELU) → residual), attention
through ``F.scaled_dot_product_attention``; learnt position embeddings; patches by a strided convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Block(nn.Module):
    """One pre-norm transformer encoder block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + self.dropout(self.proj(attn))
        return x + self.dropout(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """Vision Transformer for small images; ``distilled=True`` adds DeiT's distillation token and head.

    Args:
        image_size: side of the square input images.
        patch_size: side of the square patches (must divide ``image_size``).
        in_channels: image channels.
        num_classes: classes.
        dim: token width.
        depth: encoder blocks.
        heads: attention heads (must divide ``dim``).
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout in the blocks.
        distilled: add the distillation token and its head (``head_dist``).

    Example:
        >>> vit = ViT(28, 7, 1, 10, dim=32, depth=2, heads=2, distilled=True)
        >>> cls, dist = vit.train()(torch.randn(2, 1, 28, 28))
        >>> cls.shape, vit.eval()(torch.randn(2, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 10]))
    """

    def __init__(
        self,
        image_size: int = 28,
        patch_size: int = 7,
        in_channels: int = 1,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        distilled: bool = False,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT: patch_size={patch_size} must divide image_size={image_size}.")
        if dim % heads:
            raise ValueError(f"ViT: heads={heads} must divide dim={dim}.")
        self.num_classes, self.distilled = num_classes, bool(distilled)
        self.patch = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        tokens = 2 if distilled else 1
        self.num_prefix = tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2 + tokens, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if distilled else None
        for p in (self.cls_token, self.pos_embed, *([self.dist_token] if distilled else [])):
            nn.init.trunc_normal_(p, std=0.02)

    def tokens(self, x: Tensor) -> Tensor:
        """The encoded, normalised tokens ``(N, prefix + patches, dim)``."""
        x = self.patch(x).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        t = self.tokens(x)
        logits = self.head(t[:, 0])
        if self.head_dist is None:
            return logits
        dist = self.head_dist(t[:, 1])
        if self.training:
            return logits, dist
        return (logits + dist) / 2
