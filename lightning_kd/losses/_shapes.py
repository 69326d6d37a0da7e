"""Shape checks and spatial alignment shared by the feature and relation losses (private)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor


def check_batch(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise unless both tensors have at least 2 dims and the same batch size."""
    if student.dim() < 2 or teacher.dim() < 2:
        raise ValueError(
            f"{what}: expected batched tensors (N, ...) with at least 2 dims, got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}."
        )
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"{what}: student batch {student.shape[0]} != teacher batch {teacher.shape[0]}; "
            "feed both models the same batch."
        )


def check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise, suggesting a connector, unless student and teacher features have the same shape."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student feature {tuple(student.shape)} and teacher feature {tuple(teacher.shape)} "
            "differ in shape; add a connector (e.g. a 1x1 conv or linear layer) that maps the student "
            "feature to the teacher's shape."
        )


def check_maps(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise unless both tensors are ``(N, C, *spatial)`` maps with the same batch size."""
    if student.dim() < 3 or teacher.dim() < 3:
        raise ValueError(
            f"{what}: expected feature maps (N, C, H, W), got student {tuple(student.shape)} and teacher "
            f"{tuple(teacher.shape)}; capture a convolutional layer's output, not a pooled vector."
        )
    check_batch(student, teacher, what)


def pool_to_common_size(a: Tensor, b: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool ``(N, C, H, W)`` maps so both have ``(min H, min W)``; never upsamples."""
    if a.shape[2:] == b.shape[2:]:
        return a, b
    if a.dim() != 4 or b.dim() != 4:
        raise ValueError(
            f"{what}: spatial sizes {tuple(a.shape[2:])} and {tuple(b.shape[2:])} differ and only 4-D "
            "(N, C, H, W) maps can be pooled to a common size; pass maps with equal spatial sizes."
        )
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    if a.shape[2:] != size:
        a = F.adaptive_avg_pool2d(a, size)
    if b.shape[2:] != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


def autocast_off(t: Tensor) -> contextlib.AbstractContextManager:
    """Disable autocast on ``t``'s device, so matmuls on the (already fp32) inputs are not run in bf16."""
    try:
        return torch.autocast(t.device.type, enabled=False)
    except RuntimeError:  # a device without autocast (e.g. meta) has nothing to disable
        return contextlib.nullcontext()
