"""Checks of what the data hands the models, made once at the boundary of a run (pure torch): labels are class
indices in ``[0, num_classes)``, inputs hold no NaN or infinity. Each failure names the source (a split, the first
batch of a stage), the bad values and the fix."""

from __future__ import annotations

import torch
from torch import Tensor


class LabelError(ValueError):
    """Labels that are not class indices in ``[0, num_classes)``."""


class NonFiniteInputError(ValueError):
    """Inputs holding NaN or infinity: the loss would turn NaN on the batch that holds them, which looks like a
    diverged run."""


def _float_label_error(labels: Tensor, where: str) -> LabelError:
    shape = tuple(labels.shape)
    onehot = ""
    if labels.dim() == 2:
        sums_to_one = labels.numel() > 0 and bool(torch.allclose(labels.sum(1), labels.new_ones(len(labels))))
        each = ", each summing to 1" if sums_to_one else ""
        onehot = f" (they look one-hot or soft: one row of scores per sample{each})"
    return LabelError(
        f"labels of {where} are {labels.dtype} of shape {shape}{onehot}, but the loss needs class indices: an "
        "integer tensor (N,) with one class per sample. Convert them, e.g. labels.argmax(1).long()."
    )


def check_labels(labels: Tensor, num_classes: int, where: str) -> None:
    """Raise :class:`LabelError` naming ``where``, the bad values and the fix, unless ``labels`` are class indices.

    Args:
        labels: the targets of a split or a batch.
        num_classes: the module's number of classes.
        where: how to name the labels' source in the message (e.g. ``"the train split of DigitsDataModule"``).
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        raise _float_label_error(labels, where)
    if labels.dim() != 1:
        raise LabelError(
            f"labels of {where} have shape {tuple(labels.shape)}; expected (N,): one class index per sample. Give "
            "one integer class per sample (for (N, 1) labels: labels.squeeze(1))."
        )
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)].unique()[:5].tolist()
        raise LabelError(
            f"labels of {where} range from {low} to {high}, but the models predict {num_classes} classes "
            f"(indices 0..{num_classes - 1}); out of range: {bad}. Fix the label mapping, or build the models with "
            f"num_classes={high + 1} if the data really has that many."
        )


def class_indices(labels: Tensor, where: str) -> Tensor:
    """``labels`` as int64 class indices. Integer labels are cast; float labels only when each is a whole number
    (``2.0``): a fraction (``2.5``) would be cut to another class (``2``) without a word, and one-hot or soft rows
    are not class indices. Raises :class:`LabelError` naming ``where`` and the fix."""
    if not labels.dtype.is_floating_point:
        return labels.long()
    if labels.dim() != 1:
        raise _float_label_error(labels, where)
    bad = labels[~torch.isfinite(labels) | (labels != labels.round())]
    if len(bad):
        raise LabelError(
            f"labels of {where} are not whole numbers: {len(bad)} of {len(labels)} have a fraction or are NaN/inf "
            f"(e.g. {bad[:5].tolist()}); as class indices they would be cut to other classes (2.5 -> 2). Give "
            "integer class indices 0..num_classes-1: fix the label mapping (round or map the values yourself)."
        )
    return labels.long()


def check_finite_inputs(inputs: Tensor, where: str) -> None:
    """Raise :class:`NonFiniteInputError` naming ``where``, how many values and which samples, unless every value
    of ``inputs`` (floating point; others are skipped) is finite. One pass over the tensor, one host read."""
    if not inputs.is_floating_point() or inputs.numel() == 0:
        return
    finite = torch.isfinite(inputs)
    if bool(finite.all()):
        return
    bad_rows = (~finite.reshape(len(inputs), -1)).any(1).nonzero().flatten()
    count = int((~finite).sum())
    raise NonFiniteInputError(
        f"inputs of {where} hold {count} NaN or infinite value{'s' * (count != 1)} (in {len(bad_rows)} sample"
        f"{'s' * (len(bad_rows) != 1)}, e.g. index {bad_rows[:5].tolist()}): the loss would turn NaN on any batch "
        "holding one, which looks like a diverged run. Clean the data: drop those samples or replace the values "
        "(e.g. torch.nan_to_num) where the data is loaded, or fix the source files."
    )
