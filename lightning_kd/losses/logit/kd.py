"""Hinton knowledge distillation: KL divergence between temperature-softened distributions.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531.

    L_KD = T² · KL( softmax(t / T) ‖ softmax(s / T) ),  averaged over the batch

The T² factor keeps the gradient magnitude of the soft term roughly independent of T (paper, §2), so a
loss weight tuned at one temperature stays sensible at another.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_temperature(temperature: float | Tensor) -> None:
    if not isinstance(temperature, Tensor) and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}. Use e.g. temperature=4.0.")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor = 4.0) -> Tensor:
    """Hinton KD loss, ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over samples.

    Both inputs are cast to fp32 first, so the loss is exact under bf16/fp16 autocast.

    Args:
        student_logits: ``(N, C)`` (or ``(N, C, *)``: extra dims are treated as more samples).
        teacher_logits: same shape as ``student_logits``; no gradient flows into it.
        temperature: softening temperature ``T > 0`` (a float, or a 0-d tensor so a schedule can change it
            without recompiling).

    Returns:
        0-d tensor.

    Example:
        >>> s = torch.tensor([[1.0, 2.0, 3.0]]); t = torch.tensor([[3.0, 2.0, 1.0]])
        >>> round(kd_loss(s, t, temperature=1.0).item(), 4)
        1.1504
    """
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; both models must predict the same number of classes."
        )
    s = student_logits.float()
    t = teacher_logits.detach().float()
    if s.dim() > 2:  # (N, C, *) -> (N*, C)
        s = s.movedim(1, -1).reshape(-1, s.shape[1])
        t = t.movedim(1, -1).reshape(-1, t.shape[1])
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
    # kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


class TemperatureLoss(nn.Module):
    """Base of the logit losses softened by a temperature.

    ``temperature`` is a non-persistent buffer, so a scheduler changes it in place (:meth:`set_temperature`, or
    ``temperature.fill_``) without a ``torch.compile`` recompile; the maths read :attr:`t`, which is that buffer
    under ``torch.compile`` or after an in-place change made behind :meth:`set_temperature`'s back, and
    otherwise its Python float mirror (a 0-d tensor costs an extra kernel per use, which on a small model is a
    measurable part of a step).
    """

    temperature: Tensor

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)
        self._remember(float(temperature))

    def _remember(self, value: float) -> None:
        # the mirror is valid for this very buffer object at this version: a move (.to) makes a new object,
        # an in-place write bumps the version
        self._mirror = (value, self.temperature, self.temperature._version)

    def set_temperature(self, value: float) -> None:
        """Change ``T`` in place: the buffer (no recompile) and its Python mirror."""
        _check_temperature(value)
        self.temperature.fill_(value)
        self._remember(float(value))

    @property
    def t(self) -> float | Tensor:
        """``T`` for the maths: the Python mirror while it matches the buffer (in-place writes bump the buffer's
        version counter), else the buffer itself; always the buffer while compiling."""
        value, buffer, version = self._mirror
        buffer_now = self.temperature
        if torch.compiler.is_compiling() or buffer_now is not buffer or buffer_now._version != version:
            return buffer_now
        return value


class KDLoss(TemperatureLoss):
    """Module form of :func:`kd_loss`; ``temperature`` is a buffer a scheduler may overwrite.

    Example:
        >>> loss = KDLoss(temperature=4.0)
        >>> loss(torch.randn(8, 10), torch.randn(8, 10)).shape
        torch.Size([])
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return kd_loss(student_logits, teacher_logits, self.t)
