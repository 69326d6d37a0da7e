"""Checks and reshaping shared by the logit losses (private)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_nonnegative(name: str, value: float | Tensor, role: str, default: float) -> None:
    """Raise unless a (non-tensor) loss weight is ``>= 0``."""
    if not isinstance(value, Tensor) and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 ({role}), got {value}. Use e.g. {name}={default}.")


def check_same_logits(student_logits: Tensor, teacher_logits: Tensor, what: str) -> None:
    """Raise unless both logit tensors are ``(N, C, *)`` with the same shape."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"{what}: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; both models must predict the same number of classes."
        )
    check_logits(student_logits, what)


def check_logits(logits: Tensor, what: str, min_classes: int = 1) -> None:
    """Raise unless ``logits`` is ``(N, C, *)`` with at least ``min_classes`` classes."""
    if logits.dim() < 2:
        raise ValueError(
            f"{what}: expected logits of shape (N, C) or (N, C, *), got {tuple(logits.shape)}; "
            "add the batch dimension (e.g. logits.unsqueeze(0))."
        )
    if logits.shape[1] < min_classes:
        raise ValueError(
            f"{what}: needs at least {min_classes} classes (dim 1), got logits {tuple(logits.shape)}; "
            "pass the logits of a classifier with more classes."
        )


def as_rows(x: Tensor) -> Tensor:
    """``(N, C, *)`` -> ``(N*, C)`` in fp32: extra dims become more samples (as in :func:`kd_loss`)."""
    x = x.float()
    if x.dim() > 2:
        x = x.movedim(1, -1).reshape(-1, x.shape[1])
    return x


def target_rows(targets: Tensor, logits: Tensor, what: str) -> Tensor:
    """Check class-index ``targets`` against ``(N, C, *)`` logits and flatten them to ``(N*,)``."""
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(
            f"{what}: targets must be integer class indices (torch.long), got dtype {targets.dtype}; pass "
            "class indices, not one-hot vectors or probabilities (e.g. targets.argmax(1))."
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"{what}: targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}; expected class "
            f"indices of shape {expected} (the logits' shape without the class dim 1)."
        )
    num_classes = logits.shape[1]
    # A data-dependent check: free on CPU, a host sync on an accelerator (where cross-entropy's own device
    # assert catches bad labels anyway), and a graph break under torch.compile: so only on CPU, eagerly.
    if targets.numel() and targets.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{what}: targets must lie in [0, {num_classes}) for {num_classes} classes, got values from "
                f"{low} to {high}; check the label mapping (an ignore_index such as -100 is not supported)."
            )
    return targets.reshape(-1).long()
