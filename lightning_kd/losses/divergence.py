"""The divergence core: one per-row implementation of every divergence between a student's and a teacher's
distributions, used by classifier KD (``(N, C)`` rows) and token KD (``(tokens, V)`` rows) alike.

With ``p_s = softmax(s / T)`` and ``p_t = softmax(t / T)``, each row gives (times ``T²``, Hinton's scaling, which
keeps the gradient size roughly independent of ``T``, unless ``scale_by_t2=False``):

    forward_kl       KL(p_t ‖ p_s) = Σ_v p_t (log p_t − log p_s)           Hinton et al., 2015, arXiv:1503.02531
    reverse_kl       KL(p_s ‖ p_t)                                 Gu et al., "MiniLLM", 2023, arXiv:2306.08543
    jsd              β·KL(p_t ‖ m) + (1 − β)·KL(p_s ‖ m),  m = β·p_t + (1 − β)·p_s
                     Agarwal et al., "On-Policy Distillation of Language Models" (GKD), 2024, arXiv:2306.13649
    skew_forward_kl  KL(p_t ‖ α·p_t + (1 − α)·p_s)          Ko et al., "DistiLLM", 2024, arXiv:2402.03898
    skew_reverse_kl  KL(p_s ‖ α·p_s + (1 − α)·p_t)                                       (same paper)
    tv               ½ Σ_v |p_t − p_s|                                                total variation

Every mixture is formed in probability space, ``log m = logsumexp(log β + log p_t, log(1 − β) + log p_s)``, never by
averaging logits or log-probabilities (the bug of TRL issue #2202). All arithmetic is fp32 whatever the input
dtype, and no gradient flows into the teacher.

The options travel as one frozen :class:`Divergence` (jsonargparse fills it from YAML, no ``class_path``); the
temperature is not one of them: the LightningModule owns ``T`` and passes it on every call. Adding a divergence is
one function here, registered with :func:`_rows_of`; classifier and LM modules both get it. Pure torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

RowFunction = Callable[[Tensor, Tensor, "Divergence"], Tensor]
_ROWS: dict[str, RowFunction] = {}


def _rows_of(kind: str) -> Callable[[RowFunction], RowFunction]:
    """Register ``fn(log_p_s, log_p_t, divergence) -> (M,)`` as the per-row values of divergence ``kind``."""

    def register(fn: RowFunction) -> RowFunction:
        _ROWS[kind] = fn
        return fn

    return register


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p ‖ q)`` of each row from log-probabilities, ``(*, K) -> (*,)``; gradient flows into both.

    The one KL implementation of the library: every divergence, classifier and token loss computes its KL here.

    Example:
        >>> p, q = torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.25, 0.75]]).log()
        >>> round(kl_rows(p, q).item(), 4)  # ½ ln 2 + ½ ln(2/3)
        0.1438
    """
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def log_mixture(log_p: Tensor, log_q: Tensor, weight: float) -> Tensor:
    """``log(weight·p + (1 − weight)·q)`` in probability space, for ``0 < weight < 1``."""
    return torch.logaddexp(log_p + math.log(weight), log_q + math.log1p(-weight))


@_rows_of("forward_kl")
def _forward_kl(log_p_s: Tensor, log_p_t: Tensor, d: Divergence) -> Tensor:
    return kl_rows(log_p_t, log_p_s)


@_rows_of("reverse_kl")
def _reverse_kl(log_p_s: Tensor, log_p_t: Tensor, d: Divergence) -> Tensor:
    return kl_rows(log_p_s, log_p_t)


@_rows_of("jsd")
def _jsd(log_p_s: Tensor, log_p_t: Tensor, d: Divergence) -> Tensor:
    # the endpoints are DEFINED as the limits of JSD_β / β and JSD_β / (1 − β) (see Divergence)
    if d.beta == 0.0:
        return kl_rows(log_p_t, log_p_s)
    if d.beta == 1.0:
        return kl_rows(log_p_s, log_p_t)
    log_m = log_mixture(log_p_t, log_p_s, d.beta)
    return d.beta * kl_rows(log_p_t, log_m) + (1.0 - d.beta) * kl_rows(log_p_s, log_m)


@_rows_of("skew_forward_kl")
def _skew_forward_kl(log_p_s: Tensor, log_p_t: Tensor, d: Divergence) -> Tensor:
    if d.skew == 0.0:
        return kl_rows(log_p_t, log_p_s)
    return kl_rows(log_p_t, log_mixture(log_p_t, log_p_s, d.skew))


@_rows_of("skew_reverse_kl")
def _skew_reverse_kl(log_p_s: Tensor, log_p_t: Tensor, d: Divergence) -> Tensor:
    if d.skew == 0.0:
        return kl_rows(log_p_s, log_p_t)
    return kl_rows(log_p_s, log_mixture(log_p_s, log_p_t, d.skew))


@_rows_of("tv")
def _tv(log_p_s: Tensor, log_p_t: Tensor, d: Divergence) -> Tensor:
    return 0.5 * (log_p_t.exp() - log_p_s.exp()).abs().sum(-1)


def divergence_kinds() -> tuple[str, ...]:
    """The registered divergences, in registration order."""
    return tuple(_ROWS)


@dataclass(frozen=True)
class Divergence:
    """Which divergence a KD term minimises, and its shape parameters (the temperature is the module's).

    ``kind="jsd"`` is the generalised Jensen-Shannon divergence of GKD with TRL's convention: ``beta`` weighs the
    teacher in the mixture ``m = β·p_t + (1 − β)·p_s``; ``β = 0.5`` is the classical symmetric JSD (at most
    ``ln 2``). As ``β → 0`` or ``β → 1`` the JSD itself tends to 0 (``JSD_β / β → KL(p_t ‖ p_s)``,
    ``JSD_β / (1 − β) → KL(p_s ‖ p_t)``), but at the endpoints it is DEFINED as those limits: ``β = 0`` gives the
    full forward KL and ``β = 1`` the full reverse KL. The value therefore jumps at ``β = 0`` and ``β = 1``; a ``β``
    schedule should not sweep onto them.

    In a recipe::

        model:
          init_args:
            divergence: {kind: jsd, beta: 0.5}

    Args:
        kind: ``forward_kl``, ``reverse_kl``, ``jsd``, ``skew_forward_kl``, ``skew_reverse_kl`` or ``tv``
            (:func:`divergence_kinds`).
        beta: JSD's teacher weight in ``[0, 1]`` (``jsd`` only).
        skew: DistiLLM's skew ``α`` in ``[0, 1)`` (``skew_*`` only); ``α = 0`` is the plain KL.

    Example:
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 2.0]]); t = torch.tensor([[0.0, 2.0], [1.0, 2.0]])
        >>> Divergence("jsd", beta=0.5).rows(s, t, temperature=1.0, mask=torch.tensor([True, False]))
        tensor([0.0895, 0.0000])
    """

    kind: str = "forward_kl"
    beta: float = 0.5
    skew: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in _ROWS:
            raise ValueError(
                f"unknown divergence kind={self.kind!r}; choose one of {', '.join(_ROWS)} (e.g. kind: forward_kl)."
            )
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(
                f"divergence beta must be in [0, 1], got {self.beta}; beta=0 is forward KL, beta=1 reverse KL, e.g. "
                "0.5."
            )
        if not 0.0 <= self.skew < 1.0:
            raise ValueError(f"divergence skew must be in [0, 1), got {self.skew}; skew=0 is the plain KL, e.g. 0.1.")

    def of_log_probs(self, log_p_s: Tensor, log_p_t: Tensor) -> Tensor:
        """Per-row values ``(*,)`` from already softened log-probabilities ``(*, K)`` (no ``T²``), never negative:
        every divergence here is ``>= 0``, and what fp32 cancellation makes of two (near) equal distributions —
        a ``-1e-8`` that ``T² = 1e12`` would turn into a large negative loss — is floored at 0."""
        return _ROWS[self.kind](log_p_s, log_p_t, self).clamp_min(0.0)

    def pointwise(self, log_p_s: Tensor, log_p_t: Tensor) -> Tensor:
        """The divergence's term of single tokens: ``(*,)`` log-probabilities of the same tokens under the student and
        the teacher give ``(*,)`` terms ``g(p_t, p_s)`` whose sum over the vocabulary is :meth:`of_log_probs`' value.

        Every registered divergence is such a sum of per-token terms (each is an f-divergence, ``Σ_v p_t f(p_s /
        p_t)``; a test checks it for every kind), which is what lets tokens drawn from the teacher estimate it
        without bias (:mod:`lightning_kd.losses.token.sampled`). Terms may be negative; they are not floored."""
        return _ROWS[self.kind](log_p_s.unsqueeze(-1), log_p_t.unsqueeze(-1), self)

    def rows(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        temperature: float | Tensor,
        *,
        mask: Tensor | None = None,
        vocab_size: int | None = None,
        scale_by_t2: bool = True,
    ) -> Tensor:
        """Per-row values between ``softmax(s / T)`` and ``softmax(t / T)``, classes in the LAST dim.

        Args:
            student_logits: ``(N, V_s)`` (or ``(*, V_s)``); any dtype, computed in fp32.
            teacher_logits: ``(N, V_t)``; no gradient flows into it.
            temperature: ``T > 0`` (a float, or a 0-d tensor).
            mask: ``(N,)`` bool or 0/1, True for valid rows; other rows give 0. ``None``: all are valid.
            vocab_size: compare only the first ``vocab_size`` columns of both (heads padded past the tokenizer's
                size); required when ``V_s != V_t``.
            scale_by_t2: multiply by ``T²`` (default), as in Hinton's KD.

        Returns:
            ``(N,)`` fp32 values, 0 where ``mask`` is False.
        """
        check_temperature(temperature)
        log_p_s, log_p_t = softened_log_probs(student_logits, teacher_logits, temperature, vocab_size)
        values = self.of_log_probs(log_p_s, log_p_t)
        if scale_by_t2 and (isinstance(temperature, Tensor) or temperature != 1.0):
            values = values * temperature**2
        if mask is not None:
            if mask.shape != values.shape:
                raise ValueError(
                    f"mask {tuple(mask.shape)} does not match the logits' rows {tuple(values.shape)}; pass one entry "
                    "per row (e.g. labels != -100)."
                )
            values = torch.where(mask.bool(), values, values.new_zeros(()))
        return values


def as_divergence(value: Divergence | str | Mapping[str, Any]) -> Divergence:
    """``value`` itself, ``Divergence(kind=value)`` for a bare kind name, or ``Divergence(**value)`` for its fields
    (as a checkpoint's hyper-parameters hold it)."""
    if isinstance(value, Divergence):
        return value
    if isinstance(value, str):
        return Divergence(value)
    if isinstance(value, Mapping):
        return Divergence(**value)
    raise TypeError(
        f"divergence must be a Divergence, a kind's name or a dict of its fields, got {type(value).__name__}: e.g. "
        "divergence: {kind: jsd, beta: 0.5}."
    )


def check_temperature(temperature: float | Tensor) -> None:
    """Raise ``ValueError`` naming the value unless ``temperature`` is a finite number ``> 0`` (tensors pass: the
    module that owns ``T`` checked it when it was set)."""
    if not isinstance(temperature, Tensor) and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature}; typical values are 1 to 8 for classifiers, "
            "1.0 for language models."
        )


def shared_width(student_width: int, teacher_width: int, vocab_size: int | None) -> int:
    """The number of leading columns two heads are compared on (see :meth:`Divergence.rows`' ``vocab_size``)."""
    if vocab_size is None:
        if student_width != teacher_width:
            raise ValueError(
                f"student logits have {student_width} vocabulary columns and teacher logits {teacher_width}; pass "
                "vocab_size=<the shared tokenizer's size> (e.g. len(tokenizer)) to compare only those columns and drop "
                "the padding ids of the wider head."
            )
        return student_width
    if not 0 < vocab_size <= min(student_width, teacher_width):
        raise ValueError(
            f"vocab_size={vocab_size} must be in [1, {min(student_width, teacher_width)}] for student logits with "
            f"{student_width} and teacher logits with {teacher_width} columns; use the tokenizer's size."
        )
    return vocab_size


def softened_log_probs(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor, vocab_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """fp32 ``(log softmax(s / T), log softmax(t / T))`` over the first ``vocab_size`` columns (classes in the last
    dim); the teacher side is detached."""
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must "
            "have the same rows (all dims but the last); align the two sequences first."
        )
    v = shared_width(student_logits.shape[-1], teacher_logits.shape[-1], vocab_size)
    s = student_logits[..., :v].float()
    t = teacher_logits.detach()[..., :v].float()
    if isinstance(temperature, Tensor) or temperature != 1.0:
        s, t = s / temperature, t / temperature
    return F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)


def divergence_rows(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: Divergence | str = "forward_kl",
    temperature: float | Tensor = 1.0,
    *,
    mask: Tensor | None = None,
    vocab_size: int | None = None,
    scale_by_t2: bool = True,
) -> Tensor:
    """Function form of :meth:`Divergence.rows`: per-row values, classes in the last dim.

    Example:
        >>> divergence_rows(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]]), "reverse_kl")
        tensor([0.4338])
    """
    return as_divergence(divergence).rows(
        student_logits, teacher_logits, temperature, mask=mask, vocab_size=vocab_size, scale_by_t2=scale_by_t2
    )
