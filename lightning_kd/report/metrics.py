"""Classification figures from collected logits: accuracy, per-class accuracy, confusion, agreement, ECE.

:func:`collect_logits` (or :func:`collect_pair`, one pass for both models) runs a model over the data; every
other function here is pure and works on the resulting ``(N, C)`` logits and ``(N,)`` targets, so each can be
checked against numbers worked out by hand.

Calibration follows Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", 2017,
arXiv:1706.04599: confidences (top-1 softmax probabilities) are split into equal-width bins ``B_m`` and

    ECE = Σ_m |B_m| / N · | acc(B_m) − conf(B_m) |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassCalibrationError

from lightning_kd.losses.divergence import kl_rows

DataLike = Iterable[Any] | tuple[Tensor, Tensor] | Tensor
"""A DataLoader (or any iterable) of ``(inputs, targets)``/``(inputs, targets, index)`` tuples or bare input
tensors; or a pair of tensors ``(inputs, targets)``; or one tensor of inputs."""


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(inputs, targets)`` of one batch: a tensor (no targets), or a 2- or 3-tuple ``(x, y[, index])``."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3) and isinstance(batch[0], Tensor):
        return batch[0], batch[1]
    raise TypeError(
        f"cannot read a batch of type {type(batch).__name__}: expected a tensor of inputs or an "
        "(inputs, targets) / (inputs, targets, index) tuple, as lightning-kd's data modules yield."
    )


def iter_batches(data: DataLike, batch_size: int = 256) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(inputs, targets or None)`` from any :data:`DataLike`; in-memory tensors are cut in batches."""
    if isinstance(data, Tensor):
        data = (data,)
    if isinstance(data, (tuple, list)) and 1 <= len(data) <= 2 and all(isinstance(t, Tensor) for t in data):
        inputs, targets = data[0], (data[1] if len(data) == 2 else None)
        for start in range(0, len(inputs), batch_size):
            stop = start + batch_size
            yield inputs[start:stop], None if targets is None else targets[start:stop]
        return
    for batch in data:
        yield unpack_batch(batch)


def first_inputs(data: DataLike) -> Tensor:
    """The inputs of the first batch of ``data``."""
    for inputs, _ in iter_batches(data):
        return inputs
    raise ValueError("the data yielded no batches: give at least one (inputs, targets) batch.")


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """The models in eval mode; on exit every submodule's ``training`` flag is what it was before."""
    flags = {mod: mod.training for m in models for mod in m.modules()}
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for mod, training in flags.items():
            mod.training = training


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _as_logits(out: Any, model: nn.Module) -> Tensor:
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(
            f"{type(model).__name__} returned {shape}; the report needs (N, C) logits. Wrap the model so that "
            "forward returns the logits tensor only."
        )
    return out.float().cpu()


def collect_pair(
    student: nn.Module, teacher: nn.Module, data: DataLike, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run both models over ``data`` in one pass, so a shuffled loader still pairs the same samples.

    Returns:
        ``(student_logits (N, C), teacher_logits (N, C), targets (N,) or None)``, fp32 on the CPU.
    """
    (s, t), targets = _collect((student, teacher), data, device)
    return s, t, targets


def collect_logits(
    model: nn.Module, data: DataLike, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor | None]:
    """Logits of ``model`` over ``data``: eval mode, ``no_grad``, outputs cast to fp32.

    Each submodule's ``training`` flag is restored afterwards, so a model that was training keeps training
    (and a frozen submodule kept in eval stays in eval). The model is not moved.

    Args:
        model: any classifier whose forward returns ``(N, C)`` logits.
        data: see :data:`DataLike`.
        device: where inputs are sent; ``None``: the model's device. The model must already live there.

    Returns:
        ``(logits (N, C), targets (N,) or None)`` on the CPU; targets are ``None`` when the data has none.

    Example:
        >>> logits, targets = collect_logits(nn.Linear(4, 3), (torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])))
        >>> logits.shape, targets.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    (logits,), targets = _collect((model,), data, device)
    return logits, targets


def _collect(
    models: Sequence[nn.Module], data: DataLike, device: torch.device | str | None
) -> tuple[list[Tensor], Tensor | None]:
    devices = [model_device(m) if device is None else torch.device(device) for m in models]
    for m, d in zip(models, devices):
        if model_device(m).type != d.type:
            raise ValueError(f"{type(m).__name__} lives on {model_device(m)}, not on device={d}: move it first.")
    outputs: list[list[Tensor]] = [[] for _ in models]
    targets: list[Tensor] = []
    with eval_mode(*models), torch.no_grad():
        for inputs, y in iter_batches(data):
            for m, d, out in zip(models, devices, outputs):
                x = inputs.to(d, dtype=_model_dtype(m)) if inputs.is_floating_point() else inputs.to(d)
                out.append(_as_logits(m(x), m))
            if y is not None:
                targets.append(y.long().cpu())
    if not outputs[0]:
        raise ValueError("the data yielded no batches: nothing to evaluate.")
    if targets and sum(len(y) for y in targets) != sum(len(o) for o in outputs[0]):
        raise ValueError("some batches carry targets and others do not: give targets for every batch.")
    return [torch.cat(o) for o in outputs], torch.cat(targets) if targets else None


def _check(logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or len(logits) != len(targets):
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}."
        )
    if len(targets) and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got [{targets.min()}, {targets.max()}].")


def accuracy(logits: Tensor, targets: Tensor, top_k: int = 1) -> float:
    """Share of samples whose target is among the ``top_k`` highest logits.

    Args:
        logits: ``(N, C)``.
        targets: ``(N,)`` class indices.
        top_k: ``1 <= top_k <= C``.
    """
    _check(logits, targets)
    if not 1 <= top_k <= logits.shape[1]:
        raise ValueError(f"top_k={top_k} must be in [1, {logits.shape[1]}] (the number of classes).")
    hits = (logits.topk(top_k, dim=1).indices == targets[:, None]).any(dim=1)
    return hits.double().mean().item()


def confusion_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """``(C, C)`` int64 counts: row = true class, column = predicted (top-1) class."""
    _check(logits, targets)
    c = logits.shape[1]
    pairs = targets * c + logits.argmax(dim=1)
    return torch.bincount(pairs, minlength=c * c).view(c, c)


def per_class_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """``(C,)`` top-1 accuracy within each true class (recall); NaN for a class with no sample."""
    cm = confusion_matrix(logits, targets).double()
    return cm.diagonal() / cm.sum(dim=1)  # 0 / 0 = NaN for absent classes


def top1_agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Share of samples on which student and teacher predict the same class (top-1)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ.")
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).double().mean().item()


def kl_teacher_student(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean over samples of ``KL(p_T ‖ p_S) = Σ_c p_T,c (log p_T,c − log p_S,c)`` at temperature 1, in nats."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ.")
    log_p_s = F.log_softmax(student_logits.double(), dim=1)
    log_p_t = F.log_softmax(teacher_logits.double(), dim=1)
    return kl_rows(log_p_t, log_p_s).mean().item()


def expected_calibration_error(logits: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    """Top-1 ECE with ``n_bins`` equal-width bins and the l1 norm (Guo et al. 2017, arXiv:1706.04599).

    Computed by torchmetrics' :class:`~torchmetrics.classification.MulticlassCalibrationError` on the softmax
    probabilities (bins ``[lo, hi)``; a confidence of exactly 1.0 counts in a bin of its own).
    """
    _check(logits, targets)
    metric = MulticlassCalibrationError(num_classes=logits.shape[1], n_bins=n_bins, norm="l1")
    metric.update(logits.float().softmax(dim=1), targets)
    return metric.compute().item()


def reliability_bins(logits: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Data of a reliability diagram (Guo et al. 2017, arXiv:1706.04599, Fig. 1): per confidence bin.

    Bins are ``[k/n, (k+1)/n)``, the last one closed, so a confidence of 1.0 falls in it.

    Returns:
        ``edges (n_bins + 1,)``, and per bin ``confidence`` (mean top-1 probability), ``accuracy`` (share
        correct), both NaN for an empty bin, and ``count`` (int64).
    """
    _check(logits, targets)
    probs = logits.double().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp_(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=(pred == targets).double(), minlength=n_bins)
    return {"edges": edges, "confidence": conf_sum / count, "accuracy": acc_sum / count, "count": count}


def _listed(t: Tensor) -> list:
    """A tensor as a JSON-ready list, NaN written as ``None``."""
    return [None if v != v else v for v in t.tolist()]


def classification_summary(logits: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, Any]:
    """Every figure of one model, JSON-ready: ``top1``, ``top5`` (``None`` unless C > 5), ``ece``,
    ``per_class_accuracy`` (``None`` for absent classes), ``confusion_matrix``, ``reliability``."""
    rel = reliability_bins(logits, targets, n_bins)
    return {
        "top1": accuracy(logits, targets, 1),
        "top5": accuracy(logits, targets, 5) if logits.shape[1] > 5 else None,
        "ece": expected_calibration_error(logits, targets, n_bins),
        "per_class_accuracy": _listed(per_class_accuracy(logits, targets)),
        "confusion_matrix": confusion_matrix(logits, targets).tolist(),
        "reliability": {key: _listed(value) for key, value in rel.items()},
    }
