"""Evaluation sums of a causal LM against its teacher, chunk by chunk: perplexity, agreement, divergence.

Sums, not means, so a whole validation set reduces exactly (sum over batches and ranks, divide once):
perplexity = exp(ce_sum / count). Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_kd.losses.divergence import Divergence, shared_width
from lightning_kd.losses.token.divergences import token_divergence

Head = tuple[Tensor, Tensor | None]


def _rows(x: Tensor, head: Head | None) -> Tensor:
    return x.float() if head is None else F.linear(x, head[0], head[1]).float()


@torch.no_grad()
def token_eval_sums(
    student: Tensor,
    labels: Tensor,
    teacher: Tensor | None = None,
    *,
    student_head: Head | None = None,
    teacher_head: Head | None = None,
    vocab_size: int | None = None,
    divergence: Divergence | str = "forward_kl",
    temperature: float = 1.0,
    chunk_size: int | None = 1024,
    ignore_index: int = -100,
) -> dict[str, Tensor]:
    """Per-token sums over the valid rows (``labels != ignore_index``), one chunk of rows at a time.

    Rows are already shifted (row ``i`` predicts ``labels[i]``). ``student``/``teacher`` are logits ``(N, V)``,
    or final hidden states ``(N, H)`` when ``student_head``/``teacher_head`` (``(weight, bias)``) are given: the
    heads are then applied per chunk, so only ``chunk_size × V`` logits exist at a time.

    Returns:
        ``count`` (valid rows), ``ce`` (student next-token cross-entropy), ``correct`` (student top-1 = label);
        with a teacher also ``teacher_ce``, ``teacher_correct``, ``agree`` (student and teacher top-1 equal,
        over the shared ``vocab_size`` columns) and ``kd`` (the ``divergence``, T² included when T ≠ 1).
        All fp32 (``count`` int64), 0-d.
    """
    s_rows = student.reshape(-1, student.shape[-1])
    y = labels.reshape(-1)
    t_rows = None if teacher is None else teacher.reshape(-1, teacher.shape[-1])
    keep = y != ignore_index
    s_rows, y = s_rows[keep], y[keep]  # only valid rows reach the heads
    t_rows = None if t_rows is None else t_rows[keep]
    zero = s_rows.new_zeros((), dtype=torch.float32)
    sums = {"count": keep.sum(), "ce": zero.clone(), "correct": zero.clone()}
    if t_rows is not None:
        sums.update({name: zero.clone() for name in ("teacher_ce", "teacher_correct", "agree", "kd")})
    step = chunk_size or max(1, len(y))
    for start in range(0, len(y), step):
        rows, target = slice(start, start + step), y[start : start + step]
        s = _rows(s_rows[rows], student_head)
        sums["ce"] += F.cross_entropy(s, target, reduction="sum")
        sums["correct"] += (s.argmax(-1) == target).sum()
        if t_rows is None:
            continue
        t = _rows(t_rows[rows], teacher_head)
        v = shared_width(s.shape[-1], t.shape[-1], vocab_size)
        sums["teacher_ce"] += F.cross_entropy(t[:, :v], target, reduction="sum")
        sums["teacher_correct"] += (t[:, :v].argmax(-1) == target).sum()
        sums["agree"] += (s[:, :v].argmax(-1) == t[:, :v].argmax(-1)).sum()
        sums["kd"] += token_divergence(s, t, divergence, temperature=temperature, vocab_size=vocab_size).sum()
    return sums
