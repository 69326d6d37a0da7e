"""Trainable connectors: map a student feature to the shape of the teacher feature it is compared with.

FitNets (Romero et al., 2015, arXiv:1412.6550) call this the regressor; most feature methods since use a
1×1 conv + BatchNorm (e.g. OFD, Heo et al., 2019, arXiv:1904.01866). Shapes are full shapes including the
batch dimension, e.g. ``(N, C, H, W)`` or ``(N, D)``. Pure torch.

    student (N, Cs, Hs, Ws) → teacher (N, Ct, Ht, Wt):  resize to (Ht, Wt), then Conv2d 1×1 + BatchNorm2d
    student (N, Ds)         → teacher (N, Dt):          Linear
    student (N, Cs, Hs, Ws) → teacher (N, Dt):          global average pool, then Linear
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Resize = Literal["none", "pool", "interpolate", "global_pool"]


class Connector(nn.Module):
    """An optional spatial resize followed by a projection.

    Args:
        proj: the trainable projection (``Conv2d + BatchNorm2d`` or ``Linear``).
        resize: ``"none"``; ``"pool"`` (adaptive average pool down to ``size``); ``"interpolate"`` (bilinear,
            ``align_corners=False``, to ``size``); ``"global_pool"`` (``(N, C, H, W) → (N, C)``).
        size: target ``(H, W)`` for ``"pool"`` and ``"interpolate"``.

    Example:
        >>> c = Connector(nn.Linear(16, 64), resize="global_pool")
        >>> c(torch.randn(8, 16, 7, 7)).shape
        torch.Size([8, 64])
    """

    def __init__(self, proj: nn.Module, resize: Resize = "none", size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if resize not in ("none", "pool", "interpolate", "global_pool"):
            raise ValueError(f"resize must be 'none', 'pool', 'interpolate' or 'global_pool', got {resize!r}.")
        if resize in ("pool", "interpolate") and size is None:
            raise ValueError(f"resize={resize!r} needs the target size=(H, W).")
        self.resize = resize
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.proj = proj

    def forward(self, x: Tensor) -> Tensor:
        if self.resize == "global_pool":
            x = x.mean(dim=(2, 3))  # (N, C, H, W) -> (N, C)
        elif self.resize == "pool":
            x = F.adaptive_avg_pool2d(x, self.size)
        elif self.resize == "interpolate":
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.proj(x)

    def extra_repr(self) -> str:
        return f"resize={self.resize!r}" + (f", size={self.size}" if self.size is not None else "")


def _feature_shape(shape: Sequence[int], which: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (2, 4):
        raise ValueError(
            f"{which} shape {shape} is not supported; connectors take (N, C, H, W) or (N, D) features "
            "(shapes include the batch dimension)."
        )
    return shape


def build_connector(
    student_shape: Sequence[int], teacher_shape: Sequence[int], identity_if_equal: bool = False
) -> nn.Module:
    """A trainable module mapping a student feature of ``student_shape`` to ``teacher_shape``.

    Spatial sizes are matched *before* the 1×1 conv: a larger student map is average-pooled down (adaptive
    average pooling: every pixel counts, none is skipped), a smaller one is upsampled bilinearly
    (``align_corners=False``); when one side is larger and the other smaller, bilinear resampling handles
    both. Resizing and a bias-free 1×1 conv are both linear and commute, so this order only affects
    cost, and it keeps the resize independent of the projection.

    Args:
        student_shape: full shape of the student feature, batch dimension included.
        teacher_shape: full shape of the teacher feature, batch dimension included.
        identity_if_equal: return ``nn.Identity()`` when the shapes (batch dimension aside) are equal,
            instead of a trainable projection (FitNets always trains a regressor, so it is off by default).

    Returns:
        A :class:`Connector` (or ``nn.Identity``).

    Raises:
        ValueError: the ranks are unsupported, e.g. a flat student feature and a spatial teacher feature.

    Example:
        >>> build_connector((8, 16, 14, 14), (8, 64, 7, 7))(torch.randn(8, 16, 14, 14)).shape
        torch.Size([8, 64, 7, 7])
    """
    s = _feature_shape(student_shape, "student")
    t = _feature_shape(teacher_shape, "teacher")
    if identity_if_equal and s[1:] == t[1:]:
        return nn.Identity()
    if len(s) == 4 and len(t) == 4:
        (cs, hs, ws), (ct, ht, wt) = s[1:], t[1:]
        proj = nn.Sequential(nn.Conv2d(cs, ct, kernel_size=1, bias=False), nn.BatchNorm2d(ct))
        if (hs, ws) == (ht, wt):
            return Connector(proj)
        resize: Resize = "pool" if hs >= ht and ws >= wt else "interpolate"
        return Connector(proj, resize=resize, size=(ht, wt))
    if len(s) == 2 and len(t) == 2:
        return Connector(nn.Linear(s[1], t[1]))
    if len(s) == 4 and len(t) == 2:
        return Connector(nn.Linear(s[1], t[1]), resize="global_pool")
    raise ValueError(
        f"cannot map a flat student feature {s} to a spatial teacher feature {t}: there is no spatial layout "
        "to recover. Pick a conv layer on the student side (one giving (N, C, H, W)), or a flat teacher layer."
    )


def check_same_shape(
    student_shape: Sequence[int], teacher_shape: Sequence[int], student_layer: str, teacher_layer: str
) -> None:
    """Raise when a student and a teacher feature differ in shape (the batch dimension is not compared).

    Args:
        student_shape: full shape of the student feature, batch dimension included.
        teacher_shape: full shape of the teacher feature, batch dimension included.
        student_layer: the student's module path, for the message.
        teacher_layer: the teacher's module path, for the message.

    Raises:
        ValueError: naming both layers, both shapes and the fix.
    """
    s, t = tuple(int(d) for d in student_shape[1:]), tuple(int(d) for d in teacher_shape[1:])
    if s != t:
        raise ValueError(
            f"student layer {student_layer!r} gives features of shape {s} but teacher layer {teacher_layer!r} "
            f"gives {t} (batch dimension left out); set connector=True on this loss term, or pick layers with "
            "matching shapes."
        )
